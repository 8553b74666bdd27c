"""Adapter: rules dmkd_teacher and dmkd_student -> kd_core.train.dmkd.train_teacher / train_student."""

from kd_core.runlog import job
from kd_core.train.dmkd import (
    RunPaths,
    run_config,
    study_data,
    train_config,
    train_student,
    train_teacher,
)

with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu) as log:
    p, out = snakemake.params, snakemake.output
    paths = RunPaths(out.model, out.loss.removesuffix("/loss.parquet"), out.predictions)
    grammar = None if p.dmkd["real"] else p.grammar
    if snakemake.rule == "dmkd_teacher":
        data = study_data(p.dmkd, p.real, grammar)
        train_teacher(p.dmkd["teacher"].get("source"), data, paths, run_config(p.dmkd, "teacher", "ce"),
                      train_config(p.dmkd, "teacher", p.seed))
    else:
        run = p.run
        data = study_data(p.dmkd, p.real, grammar, p.data, run["fraction"])
        train_student(snakemake.input.get("teacher"), data, paths, run_config(p.dmkd, "student", run["objective"]),
                      train_config(p.dmkd, "student", run["seed"]), name=f"dmkd {snakemake.wildcards.dmkd_run}")
    log.info("real-test accuracy written to %s", out.predictions)
