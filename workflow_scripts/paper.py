"""Adapter: rule paper -> kd_core.report.write_paper."""

from kd_core.report import write_paper
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    p, inp = snakemake.params, snakemake.input
    write_paper(dict(zip(p.names, inp.tables, strict=True)), dict(zip(p.titles, inp.figures, strict=True)), dict(p.config),
                snakemake.output.summary, snakemake.output.tables)
