"""Adapter: rule prompts -> kd_core.prompts.write_prompt_tables."""

from kd_core.config import build
from kd_core.prompts import PromptConfig, write_prompt_tables
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    cfg = build(PromptConfig, snakemake.params.prompts, seed=snakemake.params.seed)
    write_prompt_tables(cfg, dict(snakemake.output.items()), {"code_hash": snakemake.params.code})
