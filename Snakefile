# Knowledge distillation of image-generation models: one DAG from prompts to paper figures.
# Config: config/config.yaml (the offline shapes world) or any config/experiments/*.yaml,
# validated against config/schema.yaml before any job runs. Outputs: results/<experiment>/.

from snakemake.utils import min_version

min_version("8.20")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/prompts.smk"
include: "rules/world.smk"
include: "rules/generate.smk"
include: "rules/metrics.smk"


rule all:
    input:
        all_targets(),
    default_target: True
