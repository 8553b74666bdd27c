"""Helpers to run the workflow in a temporary copy of the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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


def planned_jobs(repo: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run ({} when nothing is to be done)."""
    out = run(repo, "-n", *args)
    text = out.stdout + out.stderr
    counts: dict[str, int] = {}
    table = text.split("Job stats:")[-1] if "Job stats:" in text else ""
    for line in table.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts
