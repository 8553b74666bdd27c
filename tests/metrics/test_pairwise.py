import cv2
import imagehash
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from kd_core.errors import KDError
from kd_core.metrics.directions import HIGHER_IS_BETTER
from kd_core.metrics.pairwise import (
    METRICS,
    PAIRWISE_SCHEMA,
    metrics_for_files,
    pair_metrics,
    pairwise_metrics,
)
from kd_core.metrics.tables import gather_tables
from kd_core.shards import Shard


def _noise(seed, size=32):
    return (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)


def _scene(size=64):
    """A colourful, textured image: three coloured discs and stripes on a gradient."""
    y, x = np.mgrid[:size, :size]
    img = np.stack([x * 255 / size, y * 255 / size, np.full_like(x, 60.0)], -1)
    img[..., 2][(y // 4) % 2 == 0] = 200
    for (cy, cx, r), colour in zip([(16, 16, 10), (40, 44, 14), (50, 12, 8)], [(230, 30, 30), (30, 200, 40), (40, 60, 230)],
                                   strict=True):
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = colour
    return img.astype(np.uint8)


def _hue_shift(img, degrees):
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + degrees // 2) % 180  # OpenCV hue is 0..179
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def test_identical_images_score_perfectly():
    a = _scene()
    m = pair_metrics(a, a)
    assert set(m) == set(METRICS) and set(METRICS) <= set(HIGHER_IS_BETTER)
    assert m["mse"] == 0 and m["psnr"] == float("inf") and m["ssim"] == pytest.approx(1.0)
    assert m["phash_similarity"] == 1 and m["sharpness_ratio"] == 1 and m["sharpness_error"] == 0
    assert m["hist_correlation"] == pytest.approx(1.0) and m["hist_bhattacharyya"] == pytest.approx(1.0, abs=1e-6)
    assert m["colour_similarity"] == 1


def test_blur_lowers_the_sharpness_ratio_and_noise_raises_it():
    a = _scene()
    blurred = pair_metrics(cv2.GaussianBlur(a, (5, 5), 1.5), a)
    more_blurred = pair_metrics(cv2.GaussianBlur(a, (9, 9), 3.0), a)
    assert more_blurred["sharpness_ratio"] < blurred["sharpness_ratio"] < 0.8
    assert more_blurred["sharpness_error"] > blurred["sharpness_error"] > 0
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert pair_metrics(noisy, a)["sharpness_ratio"] > 1.2


def test_a_hue_shift_lowers_the_colour_similarities_but_keeps_structure():
    a = _scene()
    small, large = pair_metrics(_hue_shift(a, 20), a), pair_metrics(_hue_shift(a, 120), a)
    for key in ("colour_similarity", "hist_correlation", "hist_bhattacharyya"):
        assert max(large[key], small[key]) < 0.9, key  # identical images: 1
    assert large["colour_similarity"] < small["colour_similarity"]  # the moments move further with the hue
    # the shapes stay where they are: the perceptual hash sees the layout, so it changes less
    assert large["phash_similarity"] > large["hist_correlation"]


def test_values_equal_direct_library_calls():
    a, b = _scene(), np.clip(_scene().astype(int) + np.random.default_rng(1).normal(0, 15, (64, 64, 3)), 0, 255).astype(np.uint8)
    m = pair_metrics(b, a)
    af, bf = a.astype(np.float32) / 255, b.astype(np.float32) / 255
    assert m["ssim"] == pytest.approx(structural_similarity(af, bf, channel_axis=2, data_range=1.0), abs=1e-12)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(af, bf, data_range=1.0), rel=1e-5)
    assert m["mse"] == pytest.approx(np.mean((bf.astype(np.float64) - af) ** 2), rel=1e-12)

    def hist(x):
        h = cv2.calcHist([x], [0, 1, 2], None, [8, 8, 8], [0, 256] * 3).ravel()
        return h / h.sum()

    assert m["hist_correlation"] == pytest.approx(np.corrcoef(hist(b), hist(a))[0, 1])
    assert np.isfinite(m["hist_correlation"])
    bc = np.sum(np.sqrt(hist(b) * hist(a)))  # Bhattacharyya coefficient; OpenCV's distance is sqrt(1 - bc)
    assert m["hist_bhattacharyya"] == pytest.approx(1 - np.sqrt(1 - bc), abs=1e-5)
    hamming = imagehash.phash(Image.fromarray(b)) - imagehash.phash(Image.fromarray(a))
    assert m["phash_similarity"] == 1 - hamming / 64
    lap = [cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for x in (b, a)]
    assert m["sharpness_ratio"] == pytest.approx(lap[0] / lap[1])


def test_bad_input_is_named():
    with pytest.raises(KDError, match="of one size"):
        pair_metrics(_noise(0, 32), _noise(0, 16))
    with pytest.raises(KDError, match="uint8"):
        pair_metrics(_noise(0).astype(float), _noise(0))


def _folders(tmp_path, n=4, student_size=16):
    for folder in ("ref", "stu"):
        (tmp_path / folder).mkdir()
    rows = []
    for i in range(n):
        f = f"eval-{i:05d}_{i}.png"
        Image.fromarray(_noise(i)).save(tmp_path / "ref" / f)
        Image.fromarray(_noise(i if i else 9, student_size)).save(tmp_path / "stu" / f)  # resized to 32
        rows.append({"file": f, "prompt_id": f"eval-{i:05d}", "seed": i, "split": "eval"})
    pd.DataFrame(rows).to_parquet(tmp_path / "ref" / "manifest.parquet")
    pd.DataFrame(rows[::-1]).to_parquet(tmp_path / "stu" / "manifest.parquet")


def test_pairwise_table_matches_prompt_and_seed_in_parallel(tmp_path):
    _folders(tmp_path)
    out = pairwise_metrics(tmp_path / "stu" / "manifest.parquet", tmp_path / "ref" / "manifest.parquet",
                           tmp_path / "pairwise.parquet", "student", "teacher", workers=2)
    assert len(out) == 4 * len(METRICS) and set(out["metric"]) == set(METRICS)
    assert list(pd.read_parquet(tmp_path / "pairwise.parquet").columns) == PAIRWISE_SCHEMA.names
    one = pairwise_metrics(tmp_path / "stu" / "manifest.parquet", tmp_path / "ref" / "manifest.parquet",
                           tmp_path / "pairwise1.parquet", "student", "teacher", workers=1)
    pd.testing.assert_frame_equal(out, one)
    # each pair compares the same prompt and seed: the resized student image of prompt 1 is prompt 1's noise
    ref1 = np.asarray(Image.fromarray(_noise(1, 16)).resize((32, 32), Image.Resampling.BICUBIC))
    direct = pair_metrics(ref1, _noise(1))
    row = out[(out["prompt_id"] == "eval-00001") & (out["metric"] == "ssim")]
    assert row["value"].item() == pytest.approx(direct["ssim"])
    both = gather_tables([tmp_path / "pairwise.parquet", tmp_path / "pairwise1.parquet"], tmp_path / "all.parquet",
                         PAIRWISE_SCHEMA, "metrics/pairwise")
    assert len(both) == 2 * len(out)


def test_sharded_pairs_gather_to_the_unsharded_table(tmp_path):
    _folders(tmp_path, n=5)
    args = (tmp_path / "stu" / "manifest.parquet", tmp_path / "ref" / "manifest.parquet")
    whole = pairwise_metrics(*args, tmp_path / "whole.parquet", "student", "teacher", workers=1)
    parts = [tmp_path / f"{s.name}.parquet" for s in (Shard(i, 3) for i in range(3))]
    for i, part in enumerate(parts):
        pairwise_metrics(*args, part, "student", "teacher", workers=1, shard=Shard(i, 3))
    assert [pd.read_parquet(p)["prompt_id"].nunique() for p in parts] == [1, 2, 2]
    gathered = gather_tables(parts, tmp_path / "gathered.parquet", PAIRWISE_SCHEMA, "metrics/pairwise")
    pd.testing.assert_frame_equal(gathered, whole)
    # a surplus shard (more shards than pairs) writes an empty table that gathers cleanly
    empty = pairwise_metrics(*args, tmp_path / "empty.parquet", "student", "teacher", workers=1, shard=Shard(0, 9))
    assert empty.empty
    again = gather_tables([*parts, tmp_path / "empty.parquet"], tmp_path / "g2.parquet", PAIRWISE_SCHEMA, "metrics/pairwise")
    pd.testing.assert_frame_equal(again, whole)


def test_no_shared_prompt_is_an_error(tmp_path):
    _folders(tmp_path)
    man = pd.read_parquet(tmp_path / "stu" / "manifest.parquet").assign(seed=99)
    man.to_parquet(tmp_path / "stu" / "manifest.parquet")
    with pytest.raises(KDError, match="no \\(prompt_id, seed\\)"):
        pairwise_metrics(tmp_path / "stu" / "manifest.parquet", tmp_path / "ref" / "manifest.parquet",
                         tmp_path / "x.parquet", "student", "teacher")
    assert not (tmp_path / "x.parquet").exists()


def test_metrics_for_files_keeps_order(tmp_path):
    _folders(tmp_path, n=5, student_size=32)
    pairs = [(str(tmp_path / "stu" / f"eval-{i:05d}_{i}.png"), str(tmp_path / "ref" / f"eval-{i:05d}_{i}.png"))
             for i in range(5)]
    vals = metrics_for_files(pairs, workers=2)
    assert [v["mse"] == 0 for v in vals] == [False, True, True, True, True]


def test_workers_start_from_a_script_without_a_main_guard(tmp_path):
    """As a Snakemake script runs: top-level code, no ``if __name__ == "__main__"``."""
    import subprocess
    import sys

    _folders(tmp_path, n=4, student_size=32)
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "from kd_core.metrics.pairwise import metrics_for_files\n"
        f"root = {str(tmp_path)!r}\n"
        "pairs = [(f'{root}/stu/eval-{i:05d}_{i}.png', f'{root}/ref/eval-{i:05d}_{i}.png') for i in range(4)]\n"
        "print(sum(v['mse'] == 0 for v in metrics_for_files(pairs, workers=2)))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "3"
