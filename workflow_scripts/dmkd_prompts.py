"""Adapter: rule dmkd_prompts -> kd_core.class_prompts.class_prompts."""

from kd_core.class_prompts import class_prompts, write_class_prompts
from kd_core.runlog import job

with job(snakemake.log[0], snakemake.threads) as log:
    p = snakemake.params.dmkd
    grammar = None if p["real"] else snakemake.params.grammar  # a real folder's classes are names, not grammar attributes
    table = class_prompts(p["n_per_class"], snakemake.params.seed, grammar, p["labels"], p["classes"],
                          p["prompt_template"])
    write_class_prompts(table, snakemake.output[0], {"labels": p["labels"], "code_hash": snakemake.params.code})
    log.info("%d class prompts over %d classes", len(table), table["label"].nunique())
