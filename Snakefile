# Knowledge distillation of image-generation models: one DAG from prompts to paper figures.
# Config: config/config.yaml (the offline shapes world) or any config/experiments/*.yaml,
# validated against config/schema.yaml before any job runs. Outputs: results/<experiment>/.

import os

from snakemake.utils import min_version

min_version("8.20")


report: "report/workflow.rst"


# The default experiment, unless --configfile names another: then only that file counts (no
# silent merge with the default's values); keys it leaves out take the schema's defaults.
if not workflow.overwrite_configfiles:
    workflow.configfile(os.path.join(workflow.basedir, "config", "config.yaml"))


include: "rules/common.smk"
include: "rules/prompts.smk"
include: "rules/world.smk"
include: "rules/generate.smk"


# one rules file per study (kd_core.studies), in their order
for _study in PLAN.studies:

    include: f"rules/{_study}.smk"


include: "rules/metrics.smk"
include: "rules/figures.smk"
include: "rules/report.smk"


rule all:
    input:
        PLAN.all_targets(),
    default_target: True
