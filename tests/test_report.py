import numpy as np
import pandas as pd

from kd_core.metrics.stats import paired_improvement, summarize
from kd_core.report import headline, write_paper


def _long(n=40):
    rng = np.random.default_rng(0)
    base = rng.random(n)
    rows = []
    for model, delta in (("base_student", 0.0), ("lora_student", 0.1)):
        for i in range(n):
            rows += [{"model": model, "split": "eval", "prompt_id": f"p{i}", "seed": 0, "metric": "ssim",
                      "value": base[i] + delta + 0.01 * rng.standard_normal()},
                     {"model": model, "split": "eval", "prompt_id": f"p{i}", "seed": 0, "metric": "mse",
                      "value": base[i] + 0.01 * rng.standard_normal()}]
    return pd.DataFrame(rows)


def test_headline_names_the_improved_metrics():
    imp = paired_improvement(_long(), "base_student")
    (line,) = headline(imp)
    assert line.startswith("**lora_student** against **base_student** (40 paired images): better on 1 of 2 metrics")
    assert "ssim" in line and "p = " in line


def test_paper_summary_and_tables(tmp_path):
    long = _long()
    summarize(long, tmp_path / "summary.parquet", n_boot=200)
    paired_improvement(long, "base_student", tmp_path / "improvement.parquet", n_boot=200)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "bars.png").write_bytes(b"\x89PNG")
    text = write_paper({"summary": tmp_path / "summary.parquet", "improvement": tmp_path / "improvement.parquet"},
                       {"Bars": tmp_path / "figures" / "bars.png"}, {"experiment": "t", "seed": 0, "models": {}},
                       tmp_path / "paper" / "summary.md", tmp_path / "paper" / "tables")
    assert (tmp_path / "paper" / "summary.md").read_text() == text
    assert "## Headline" in text and "![Bars](../figures/bars.png)" in text and "## Provenance" in text
    assert "| metric" in text and "lora_student" in text
    for name in ("summary", "improvement"):
        tex = (tmp_path / "paper" / "tables" / f"{name}.tex").read_text()
        assert "\\begin{table}" in tex and f"\\label{{tab:{name}}}" in tex
        assert (tmp_path / "paper" / "tables" / f"{name}.md").read_text().startswith("|")
        csv = pd.read_csv(tmp_path / "paper" / "tables" / f"{name}.csv")
        assert len(csv) == len(pd.read_parquet(tmp_path / f"{name}.parquet"))
