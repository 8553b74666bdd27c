"""Adapter: rule dmkd_summary -> kd_core.metrics.classifier.summarize_classifiers."""

from kd_core.metrics.classifier import summarize_classifiers
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads) as log:
    runs = {"teacher": {"predictions": snakemake.input.teacher, "data": "real", "objective": "ce"}}
    for (name, run), path in zip(snakemake.params.runs.items(), snakemake.input.runs, strict=True):
        runs[name] = {**run, "predictions": path, "data": "real" if run["data"] == "real" else "synthetic"}
    table = summarize_classifiers(runs, snakemake.output[0], snakemake.params.seed, snakemake.params.bootstrap)
    log.info("\n%s", table[["run", "accuracy", "ci_low", "ci_high", "relative_to_real", "difference"]].to_string(index=False))
