import numpy as np
import pandas as pd
from PIL import Image
from skimage.metrics import structural_similarity

from kd_core.metrics.pairwise import pair_metrics, pairwise_metrics


def _img(seed, size=32):
    return np.random.default_rng(seed).random((size, size, 3))


def test_known_values():
    a = _img(0)
    same = pair_metrics(a, a)
    assert same["mse"] == 0 and same["ssim"] == 1 and same["psnr"] == float("inf")
    noisy = np.clip(a + np.random.default_rng(1).normal(0, 0.1, a.shape), 0, 1)
    m = pair_metrics(noisy, a)
    assert abs(m["mse"] - np.mean((noisy - a) ** 2)) < 1e-12
    assert abs(m["ssim"] - structural_similarity(a, noisy, channel_axis=2, data_range=1.0)) < 1e-12
    assert abs(m["psnr"] - 10 * np.log10(1 / m["mse"])) < 1e-9
    worse = pair_metrics(np.clip(a + np.random.default_rng(1).normal(0, 0.3, a.shape), 0, 1), a)
    assert worse["ssim"] < m["ssim"] and worse["mse"] > m["mse"]


def test_pairwise_table_matches_prompt_and_seed(tmp_path):
    for folder in ("ref", "stu"):
        (tmp_path / folder).mkdir()
    rows = []
    for i in range(3):
        f = f"eval-{i:05d}_{i}.png"
        Image.fromarray((_img(i) * 255).astype("uint8")).save(tmp_path / "ref" / f)
        Image.fromarray((_img(i if i else 9, 16) * 255).astype("uint8")).save(tmp_path / "stu" / f)  # resized to 32
        rows.append({"file": f, "prompt_id": f"eval-{i:05d}", "seed": i, "split": "eval"})
    pd.DataFrame(rows).to_parquet(tmp_path / "ref" / "manifest.parquet")
    pd.DataFrame(rows[::-1]).to_parquet(tmp_path / "stu" / "manifest.parquet")
    out = pairwise_metrics(tmp_path / "stu" / "manifest.parquet", tmp_path / "ref" / "manifest.parquet",
                           tmp_path / "pairwise.parquet", "student", "teacher")
    assert len(out) == 9 and set(out["metric"]) == {"mse", "psnr", "ssim"}
    assert pd.read_parquet(tmp_path / "pairwise.parquet").shape == out.shape
