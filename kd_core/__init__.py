"""kd_core: the compute package of the knowledge-distillation workflow.

Every stage of the Snakemake workflow calls exactly one function of this package; nothing here
imports snakemake, so each function can be used from a notebook as well.
"""

__version__ = "0.1.0"
