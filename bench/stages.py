"""Stage profile of a finished (or partial) run: wall time, CPU time and peak memory per rule and
per study, from the Snakemake benchmark files of one experiment.

    python bench/stages.py results/shapes            # or: make profile [CONFIG=...]
    python bench/stages.py results/shapes --jobs     # one row per job as well

Each job's ``benchmarks/<rule>_<wildcards>.tsv`` is matched to its rule (the longest rule name in
``rules/*.smk`` that prefixes the file name); its study is the rule file (world, generate, lora,
block_kd, size_study, dmkd, metrics, figures, report). ``wall_s`` sums the jobs' own wall
times (what the run would take one job after another), ``cpu_s`` their CPU time (the ``job
resources:`` line kd_core's job wrapper ends each log with); the run's elapsed time, from the first job
start to the last job end recorded in the newest ``.snakemake/log`` file of this experiment, is
printed below the table when that log is there. Writes nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
_RULE = re.compile(r"^\s*(?:use\s+rule\s+\w+\s+as\s+|rule\s+)(\w+)", re.MULTILINE)  # a twin's own name
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$", re.MULTILINE)


def rule_studies(rules_dir: Path = ROOT / "rules") -> dict[str, str]:
    """Rule name -> study (its rule file's stem)."""
    out: dict[str, str] = {}
    for smk in sorted(rules_dir.glob("*.smk")):
        for name in _RULE.findall(smk.read_text()):
            out.setdefault(name, smk.stem)
    return out


_RESOURCES = re.compile(r"^job resources: cpu_s=([\d.]+) ", re.MULTILINE)


def job_cpu_s(log: Path) -> float | None:
    """CPU seconds from the last ``job resources:`` line kd_core's job wrapper wrote to ``log``."""
    found = _RESOURCES.findall(log.read_text(errors="replace")) if log.is_file() else []
    return float(found[-1]) if found else None


def job_table(run_dir: Path, studies: dict[str, str]) -> pd.DataFrame:
    """One row per benchmark file: job, rule, study, wall_s, cpu_s, max_rss_mb."""
    by_length = sorted(studies, key=len, reverse=True)
    rows = []
    for tsv in sorted((run_dir / "benchmarks").glob("*.tsv")):
        bench = pd.read_csv(tsv, sep="\t")
        if bench.empty:
            continue
        last = bench.iloc[-1]  # a rerun appends no rows: Snakemake rewrites the file; the last row is the job's
        job = tsv.stem
        rule = next((r for r in by_length if job == r or job.startswith(r + "_")), job)
        rss = pd.to_numeric(last.get("max_rss"), errors="coerce")
        cpu = job_cpu_s(run_dir / "logs" / f"{job}.log")
        rows.append({"job": job, "rule": rule, "study": studies.get(rule, "?"), "wall_s": float(last["s"]),
                     "cpu_s": cpu if cpu is not None else float(pd.to_numeric(last.get("cpu_time"), errors="coerce")),
                     "max_rss_mb": float(rss) if pd.notna(rss) else float("nan")})
    return pd.DataFrame(rows, columns=["job", "rule", "study", "wall_s", "cpu_s", "max_rss_mb"])


def summarise(jobs: pd.DataFrame, by: str) -> pd.DataFrame:
    g = jobs.groupby(by, sort=False)
    out = pd.DataFrame({"jobs": g.size(), "wall_s": g["wall_s"].sum(), "cpu_s": g["cpu_s"].sum(),
                        "max_rss_mb": g["max_rss_mb"].max()})
    out = out.sort_values("wall_s", ascending=False)
    out.loc["total"] = [len(jobs), jobs["wall_s"].sum(), jobs["cpu_s"].sum(), jobs["max_rss_mb"].max()]
    out["jobs"] = out["jobs"].astype(int)
    return out.round(1)


def elapsed(log_dir: Path, run_dir: Path) -> tuple[float, Path] | None:
    """Seconds from the first to the last time stamp of the newest Snakemake log that ran jobs of ``run_dir``."""
    marker = f"{run_dir.as_posix().rstrip('/')}/"
    for log in sorted(log_dir.glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime, reverse=True):
        text = log.read_text(errors="replace")
        if "benchmark: " + marker not in text and marker + "benchmarks/" not in text:
            continue
        stamps = [datetime.strptime(" ".join(s.split()), "%a %b %d %H:%M:%S %Y") for s in _STAMP.findall(text)]
        if len(stamps) >= 2:
            return (stamps[-1] - stamps[0]).total_seconds(), log
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="results/<experiment>")
    ap.add_argument("--jobs", action="store_true", help="also print one row per job")
    args = ap.parse_args(argv)
    if not (args.run_dir / "benchmarks").is_dir():
        print(f"error: {args.run_dir / 'benchmarks'} does not exist; run the workflow first "
              "(make demo) or name the experiment's folder, e.g. results/shapes", file=sys.stderr)
        return 2
    jobs = job_table(args.run_dir, rule_studies())
    if jobs.empty:
        print(f"error: no benchmark files in {args.run_dir / 'benchmarks'}", file=sys.stderr)
        return 2
    print(f"## Stage profile of {args.run_dir} ({len(jobs)} jobs)\n")
    print("### Per study\n")
    print(summarise(jobs, "study").to_markdown())
    print("\n### Per rule\n")
    print(summarise(jobs, "rule").to_markdown())
    if args.jobs:
        print("\n### Per job\n")
        print(jobs.sort_values("wall_s", ascending=False).round(1).to_markdown(index=False))
    run = elapsed(Path(".snakemake/log"), args.run_dir)
    if run is not None:
        print(f"\nElapsed (first job start to last job end, {run[1]}): {run[0]:.0f} s")
    print("\nwall_s sums each job's own wall time; jobs that ran side by side overlap in the elapsed time. "
          "cpu_s is the job's own CPU time (child processes included) from the last line of its log, "
          "else Snakemake's benchmark value, which is sampled every 0.5 s for 15 s and then every 30 s "
          "(a lower bound).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
