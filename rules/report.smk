# Paper materials: paper/summary.md (headline, tables, figures, protocol, provenance) and the
# tables as CSV / Markdown / LaTeX. The HTML report: snakemake --report results/<experiment>/report.html


# On a cluster (profiles/slurm) these run on the submitting host instead of queueing as jobs:
# the paper, and the gathers of rules/metrics.smk (concatenating per-model tables).
localrules:
    paper,
    pairwise_gather,
    alignment_gather,


rule paper:
    input:
        tables=list(PLAN.metric_tables().values()),
        figures=list(PLAN.paper_figures().values()),
    output:
        summary=f"{OUT}/paper/summary.md",
        tables=directory(f"{OUT}/paper/tables"),
    params:
        names=list(PLAN.metric_tables()),
        titles=list(PLAN.paper_figures()),
        config=config,
        code=adapter_code("paper"),
    log:
        f"{OUT}/logs/paper.log",
    benchmark:
        f"{OUT}/benchmarks/paper.tsv"
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/paper.py"
