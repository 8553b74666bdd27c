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
printed below the table when that log is there, with the run's critical path read from the same log:
the chain of jobs, from the last to finish back to the first, in which each job's latest-finishing
input job is the one before it (``waited_s``: how long the job sat after that input was ready,
waiting for a free core). Shortening a job off that chain does not shorten the run. Writes nothing.
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


def _stamp_time(stamp: str) -> datetime:
    """A Snakemake log time stamp (``Sun Dec  6 19:36:32 2026``) as a datetime."""
    return datetime.strptime(" ".join(stamp.split()), "%a %b %d %H:%M:%S %Y")


def elapsed(log_dir: Path, run_dir: Path) -> tuple[float, Path] | None:
    """Seconds from the first to the last time stamp of the newest Snakemake log that ran jobs of ``run_dir``."""
    log = run_log(log_dir, run_dir)
    if log is None:
        return None
    stamps = [_stamp_time(s) for s in _STAMP.findall(log.read_text(errors="replace"))]
    return ((stamps[-1] - stamps[0]).total_seconds(), log) if len(stamps) >= 2 else None


_ENTRY = re.compile(r"^(?:local)?rule (\w+):$")
_FIELD = re.compile(r"^    (input|output|log|jobid): (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)")


def log_jobs(text: str) -> pd.DataFrame:
    """The jobs a Snakemake log records: job (its log file's stem, else rule_jobid), rule, start_s and
    end_s (seconds after the log's first time stamp), inputs and outputs (sets of paths)."""
    t0 = now = None
    jobs: dict[str, dict] = {}
    current: dict | None = None
    for line in text.splitlines():
        stamp = _STAMP.match(line)
        if stamp:
            now = _stamp_time(stamp.group(1))
            t0 = t0 or now
            continue
        entry = _ENTRY.match(line)
        if entry:
            current = {"rule": entry.group(1), "start_s": (now - t0).total_seconds(), "input": set(), "output": set()}
            continue
        field = _FIELD.match(line)
        if field and current is not None:
            key, value = field.groups()
            if key == "jobid":
                current["jobid"] = value
                jobs[value] = current
                current = None
            elif key == "log":
                current["job"] = Path(value.split(", ")[0]).stem
            else:
                current[key] = set(value.split(", "))
            continue
        done = _FINISHED.match(line)
        if done and done.group(1) in jobs:
            jobs[done.group(1)]["end_s"] = (now - t0).total_seconds()
    rows = [{"job": j.get("job", f"{j['rule']}_{i}"), "rule": j["rule"], "start_s": j["start_s"],
             "end_s": j["end_s"], "inputs": j["input"], "outputs": j["output"]}
            for i, j in jobs.items() if "end_s" in j and j["rule"] != "all"]
    return pd.DataFrame(rows, columns=["job", "rule", "start_s", "end_s", "inputs", "outputs"])


def critical_path(jobs: pd.DataFrame) -> pd.DataFrame:
    """The chain that set the run's wall time: from the job that finished last, each step back to the
    job's latest-finishing input job. ``waited_s``: start minus that input's end (time spent queued
    for a core); ``wall_s``: the job's own run time. First job first."""
    if jobs.empty:
        return pd.DataFrame(columns=["job", "start_s", "end_s", "wall_s", "waited_s"])
    producer = {out: i for i, outs in jobs["outputs"].items() for out in outs}
    chain, i = [], jobs["end_s"].idxmax()
    while i is not None:
        row = jobs.loc[i]
        deps = {producer[p] for p in row["inputs"] if p in producer} - {i}
        gate = max(deps, key=lambda d: jobs.loc[d, "end_s"]) if deps else None
        ready = jobs.loc[gate, "end_s"] if gate is not None else 0.0
        chain.append({"job": row["job"], "start_s": row["start_s"], "end_s": row["end_s"],
                      "wall_s": row["end_s"] - row["start_s"], "waited_s": row["start_s"] - ready})
        i = gate
    return pd.DataFrame(chain[::-1])


def run_log(log_dir: Path, run_dir: Path) -> Path | None:
    """The newest Snakemake log that ran jobs of ``run_dir``."""
    marker = f"{run_dir.as_posix().rstrip('/')}/"
    for log in sorted(log_dir.glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime, reverse=True):
        text = log.read_text(errors="replace")
        if "benchmark: " + marker in text or marker + "benchmarks/" in text:
            return log
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
        path = critical_path(log_jobs(run[1].read_text(errors="replace")))
        print(f"\n### Critical path ({len(path)} jobs, {path['wall_s'].sum():.0f} s running, "
              f"{path['waited_s'].sum():.0f} s waiting for a core)\n")
        print(path.round(1).to_markdown(index=False))
    print("\nwall_s sums each job's own wall time; jobs that ran side by side overlap in the elapsed time. "
          "cpu_s is the job's own CPU time (child processes included) from the last line of its log, "
          "else Snakemake's benchmark value, which is sampled every 0.5 s for 15 s and then every 30 s "
          "(a lower bound).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
