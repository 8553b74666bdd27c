"""Shared by the SLURM tests: which rules are GPU rules, and the jobs a Snakemake log shows."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles" / "slurm"
# the site settings of profiles/slurm/config.yaml: the tests set the ones they need
SITE_VARS = ("KD_SLURM_PARTITION", "KD_SLURM_GPU_PARTITION", "KD_SLURM_ACCOUNT", "KD_SLURM_GPU_MODEL", "KD_SLURM_SITE")


def rules_matching(pattern: str, rules_dir: Path = ROOT / "rules") -> set[str]:
    """Rules whose block in rules/*.smk has a line matching ``pattern``."""
    found = set()
    for smk in sorted(rules_dir.glob("*.smk")):
        # a rule's block runs from its `rule NAME:` line to the next rule or checkpoint
        blocks = re.split(r"^\s*(?:rule|checkpoint)\s+(?=\w+:)", smk.read_text(), flags=re.M)[1:]
        found |= {block.split(":", 1)[0] for block in blocks if re.search(pattern, block, flags=re.M)}
    return found


def model_thread_rules() -> set[str]:
    """Rules whose threads are MODEL_THREADS (rules/common.smk: fewer on a local CPU-only run than on a cluster)."""
    return rules_matching(r"^\s*threads:\s*MODEL_THREADS")


def gpu_rules(rules_dir: Path = ROOT / "rules") -> set[str]:
    """Rules whose resources ask for a GPU (``gpu=1`` in rules/*.smk), their own or, for
    ``use rule A as B with:``, A's unless B's block sets resources of its own."""
    found, derived = set(), {}
    head = r"^[ \t]*(?:(?:rule|checkpoint)[ \t]+(\w+)|use[ \t]+rule[ \t]+(\w+)[ \t]+as[ \t]+(\w+)[ \t]+with)[ \t]*:"
    for smk in sorted(rules_dir.glob("*.smk")):
        text = smk.read_text()
        heads = list(re.finditer(head, text, flags=re.M))
        for i, m in enumerate(heads):
            # a rule's block runs from its header to the next rule, checkpoint or use rule
            block = text[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
            asks = re.search(r"^\s*gpu\s*=\s*[1-9]", block, flags=re.M) is not None
            if m.group(1):
                if asks:
                    found.add(m.group(1))
            elif asks or not re.search(r"^\s*resources\s*:", block, flags=re.M):
                derived[m.group(3)] = (m.group(2), asks)
    for name, (parent, asks) in derived.items():
        if asks or parent in found:
            found.add(name)
    return found


def without_job_logs(log: str) -> str:
    """A Snakemake log without the logs of failed jobs it quotes (show-failed-logs: `Logfile X:` between ==== lines)."""
    kept, lines, i = [], log.splitlines(), 0
    while i < len(lines):
        if (lines[i].startswith("Logfile ") and lines[i].endswith(":") and i + 1 < len(lines)
                and set(lines[i + 1]) == {"="}):
            rule = lines[i + 1]  # the quoted log ends at the same ==== line (its own may hold shorter ones)
            i += 2
            while i < len(lines) and lines[i] != rule:
                i += 1
        else:
            kept.append(lines[i])
        i += 1
    return "\n".join(kept)


def printed_jobs(text: str) -> list[dict]:
    """The jobs a Snakemake run or dry run prints: rule, local, jobid, threads, resources (str values)."""
    jobs = []
    current = None
    for line in text.splitlines():
        m = re.match(r"^(local)?rule (\w+):$", line)
        if m:
            current = {"rule": m.group(2), "local": bool(m.group(1)), "threads": 1, "resources": {}}
            jobs.append(current)
            continue
        if current is None or not line.startswith("    "):
            current = None  # the job's block ends at the first line that is not indented
            continue
        key, _, value = line.strip().partition(": ")
        if key == "jobid":
            current["jobid"] = int(value)
        elif key == "threads":
            current["threads"] = int(value)
        elif key == "resources":
            current["resources"] = dict(item.split("=", 1) for item in value.split(", ") if "=" in item)
    return jobs
