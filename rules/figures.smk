# Figures (PNG + PDF, results/<experiment>/figures/) and image comparisons (comparisons/).
# Each figure carries a caption in report/ for the Snakemake HTML report.


# Seconds of matplotlib each: on a cluster (profiles/slurm) they run on the submitting host
# instead of queueing as jobs. figure_dmkd is defined in rules/dmkd.smk.
localrules:
    figure_metrics,
    figure_distribution,
    figure_attributes,
    figure_loss,
    figure_efficiency,
    comparison_models,
    comparison_grid,
    figure_dmkd,


rule figure_metrics:
    input:
        summary=f"{OUT}/metrics/summary.parquet",
        pairwise=f"{OUT}/metrics/pairwise.parquet",
        attributes=expand(f"{OUT}/metrics/attributes/{{model}}.parquet", model=PLAN.models) if PLAN.world else [],
        alignment=f"{OUT}/metrics/alignment.parquet" if PLAN.clip else [],
    output:
        bars=report(f"{OUT}/figures/metric_bars.png", caption="../report/metric_bars.rst", category="Metrics"),
        bars_pdf=f"{OUT}/figures/metric_bars.pdf",
        radar=report(f"{OUT}/figures/radar.png", caption="../report/radar.rst", category="Metrics"),
        radar_pdf=f"{OUT}/figures/radar.pdf",
        distributions=report(f"{OUT}/figures/distributions.png", caption="../report/distributions.rst", category="Metrics"),
        distributions_pdf=f"{OUT}/figures/distributions.pdf",
    params:
        code=adapter_code("figure_metrics"),
    log:
        f"{OUT}/logs/figure_metrics.log",
    benchmark:
        f"{OUT}/benchmarks/figure_metrics.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/figure_metrics.py"


rule figure_distribution:
    input:
        f"{OUT}/metrics/distribution.parquet",
    output:
        png=report(f"{OUT}/figures/distribution_metrics.png", caption="../report/distribution_metrics.rst", category="Metrics"),
        pdf=f"{OUT}/figures/distribution_metrics.pdf",
    params:
        code=adapter_code("figure_distribution"),
    log:
        f"{OUT}/logs/figure_distribution.log",
    benchmark:
        f"{OUT}/benchmarks/figure_distribution.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/figure_distribution.py"


rule figure_attributes:
    input:
        f"{OUT}/metrics/attribute_accuracy.parquet",
    output:
        png=report(f"{OUT}/figures/attribute_accuracy.png", caption="../report/attribute_accuracy.rst", category="Metrics"),
        pdf=f"{OUT}/figures/attribute_accuracy.pdf",
    params:
        code=adapter_code("figure_attributes"),
    log:
        f"{OUT}/logs/figure_attributes.log",
    benchmark:
        f"{OUT}/benchmarks/figure_attributes.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/figure_attributes.py"


rule figure_loss:
    input:
        **PLAN.loss_tables(),
    output:
        png=report(f"{OUT}/figures/loss_curves.png", caption="../report/loss_curves.rst", category="Training"),
        pdf=f"{OUT}/figures/loss_curves.pdf",
    params:
        code=adapter_code("figure_loss"),
    log:
        f"{OUT}/logs/figure_loss.log",
    benchmark:
        f"{OUT}/benchmarks/figure_loss.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/figure_loss.py"


rule figure_efficiency:
    input:
        efficiency=f"{OUT}/metrics/efficiency.parquet",
        summary=f"{OUT}/metrics/summary.parquet",
    output:
        png=report(f"{OUT}/figures/efficiency.png", caption="../report/efficiency.rst", category="Efficiency"),
        pdf=f"{OUT}/figures/efficiency.pdf",
    params:
        code=adapter_code("figure_efficiency"),
    log:
        f"{OUT}/logs/figure_efficiency.log",
    benchmark:
        f"{OUT}/benchmarks/figure_efficiency.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/figure_efficiency.py"


rule comparison_models:
    input:
        PLAN.manifests(),
    output:
        side=report(f"{OUT}/comparisons/side_by_side.png", caption="../report/side_by_side.rst", category="Comparisons"),
        side_pdf=f"{OUT}/comparisons/side_by_side.pdf",
        diff=report(f"{OUT}/comparisons/difference_maps.png", caption="../report/difference_maps.rst", category="Comparisons"),
        diff_pdf=f"{OUT}/comparisons/difference_maps.pdf",
    params:
        models=PLAN.models,
        n=PLAN.metrics["figures"]["n_compare"],
        code=adapter_code("comparison_models"),
    log:
        f"{OUT}/logs/comparison_models.log",
    benchmark:
        f"{OUT}/benchmarks/comparison_models.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/comparison_models.py"


rule comparison_grid:
    input:
        main=f"{OUT}/images/{{model}}/eval.parquet",
        filler=f"{OUT}/images/{{model}}/filler.parquet",
    output:
        png=report(f"{OUT}/comparisons/grid_{{model}}.png", caption="../report/grid.rst", category="Comparisons", subcategory="{model}"),
        pdf=f"{OUT}/comparisons/grid_{{model}}.pdf",
    params:
        blocks=PLAN.metrics["figures"]["grid_blocks"],
        code=adapter_code("comparison_grid"),
    log:
        f"{OUT}/logs/comparison_grid_{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/comparison_grid_{{model}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/kd_core.yaml"
    script:
        "../workflow_scripts/comparison_grid.py"
