"""Adapter: rule prompts -> kd_core.prompts.write_prompt_table (one split)."""

from kd_core.config import build
from kd_core.prompts import PromptConfig, write_prompt_table
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads):
    cfg = build(PromptConfig, snakemake.params.prompts)
    write_prompt_table(cfg, snakemake.wildcards.split, snakemake.output[0], {"code_hash": snakemake.params.code})
