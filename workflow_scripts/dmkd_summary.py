"""Adapter: rule dmkd_summary -> kd_core.metrics.dmkd.summarize_dmkd."""

from kd_core.metrics.dmkd import summarize_dmkd
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params
    runs = {"teacher": {"predictions": [snakemake.input.teacher], "data": "real", "objective": "ce"}}
    for name, run in p.runs.items():
        runs[name] = {**run, "predictions": [], "data": "real" if run["data"] == "real" else "synthetic"}
    for (run, _seed), path in zip(p.jobs.values(), snakemake.input.runs, strict=True):
        runs[run]["predictions"].append(path)
    table = summarize_dmkd(runs, snakemake.output[0], p.seed, p.bootstrap)
    log.info("\n%s", table[["run", "n_seeds", "accuracy", "ci_low", "ci_high", "relative_to_real", "difference",
                            "diff_ci_low", "diff_ci_high"]].to_string(index=False))
