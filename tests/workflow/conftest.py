"""Helpers to run the workflow in a temporary copy of the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def copy_repo(dest: Path) -> Path:
    """The workflow and kd_core copied to ``dest`` (so tests may edit code without touching the repo)."""
    for name in ("Snakefile", "rules", "workflow_scripts", "config", "envs", "profiles", "report", "kd_core"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def run(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Snakemake in ``repo`` with its own kd_core copy first on the path."""
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "2", "TQDM_MININTERVAL": "5"}
    if "-n" in args:  # a dry run of a real config names hub ids this machine's cache lacks; it downloads nothing
        env["HF_HUB_OFFLINE"] = "0"
    proc = subprocess.run([*SNAKEMAKE, "--cores", "2", *args], cwd=repo, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def edited_config(repo: Path, name: str, old: str, new: str) -> Path:
    """config/smoke.yaml with ``old`` (which must occur exactly once) replaced by ``new``, as config/<name>."""
    cfg = (repo / "config" / "smoke.yaml").read_text()
    assert cfg.count(old) == 1, f"config/smoke.yaml no longer has {old!r} once: update the test"
    out = repo / "config" / name
    out.write_text(cfg.replace(old, new))
    return out


def config_with(repo: Path, name: str, changes: dict[str, object]) -> Path:
    """config/smoke.yaml with each dotted key of ``changes`` set to its value (the other keys in their
    order), as config/<name>."""
    cfg = yaml.safe_load((repo / "config" / "smoke.yaml").read_text())
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        section = cfg
        for part in parents:
            section = section.setdefault(part, {})
        section[leaf] = value
    out = repo / "config" / name
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def _dry_run(repo: Path, *args: str) -> str:
    """The text of a dry run; '' when Snakemake says there is nothing to be done. Output that is
    neither (Snakemake's format changed) is an error, never an empty plan."""
    out = run(repo, "-n", *args)
    text = out.stdout + out.stderr
    if "Job stats:" in text:
        return text
    if "Nothing to be done" in text:
        return ""
    raise AssertionError(f"cannot read the dry run's plan (no 'Job stats:', no 'Nothing to be done'):\n{text[-3000:]}")


def planned_jobs(repo: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run ({} when nothing is to be done)."""
    return _job_stats(_dry_run(repo, *args))


def plan(repo: Path, *args: str) -> tuple[dict[str, int], str]:
    """One dry run: its job counts by rule and its text (each job's input, output, resources)."""
    text = _dry_run(repo, *args)
    return _job_stats(text), text


def _job_stats(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in text.split("Job stats:")[-1].splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    if text and not counts:
        raise AssertionError(f"cannot read the job stats of the dry run:\n{text[-3000:]}")
    return counts


def planned_job_names(repo: Path, *args: str) -> set[str]:
    """Every job of a dry run as ``rule`` or ``rule[wildcard=value,...]`` (set() when nothing is to be done)."""
    text = _dry_run(repo, *args)
    jobs = set()
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:[ \t]+.*\n?)*)", text, re.MULTILINE):
        wildcards = re.search(r"^\s+wildcards: (.*)$", m.group(2), re.MULTILINE)
        jobs.add(m.group(1) + (f"[{wildcards.group(1).replace(' ', '')}]" if wildcards else ""))
    if sum(_job_stats(text).values()) != len(jobs):
        raise AssertionError(f"read {len(jobs)} jobs of a plan of {sum(_job_stats(text).values())}:\n{text[-3000:]}")
    return jobs
