import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kd_core.generate import PARTIAL, GenerationConfig, generate_images
from kd_core.io import read_metadata
from kd_core.prompts import PromptConfig, synthesize_prompts


@pytest.fixture(scope="module")
def prompts():
    t = synthesize_prompts(PromptConfig(grammar="dogs", filler_grammar="artistic", n_train=2, n_eval=3, n_filler=1))
    return pd.concat([t["train"], t["eval"]]).reset_index(drop=True)


CFG = GenerationConfig(steps=2, guidance_scale=5.0, resolution=64, batch_size=2, device="cpu", scheduler="euler")


def _pixels(folder, manifest):
    return {f: np.asarray(Image.open(folder / f)) for f in manifest["file"]}


@pytest.mark.parametrize("which", ["tiny_sd", "tiny_sdxl"])
def test_generation_writes_pngs_and_manifest(request, tmp_path, prompts, which):
    source = request.getfixturevalue(which)
    man = generate_images(str(source), prompts, tmp_path, CFG, "m")
    assert list(man["file"]) == [f"{p}_{s}.png" for p, s in zip(prompts["prompt_id"], prompts["seed"], strict=True)]
    assert all(Image.open(tmp_path / f).size == (64, 64) for f in man["file"])
    assert {"breed", "pose"} <= set(man.columns) and (man["steps"] == 2).all() and (man["dtype"] == "float32").all()
    assert not (tmp_path / PARTIAL).exists()
    assert read_metadata(tmp_path / "manifest.parquet")["settings"]["scheduler"] == "euler"


def test_images_do_not_depend_on_batch_size_and_repeat(tmp_path, prompts, tiny_sd):
    a = generate_images(str(tiny_sd), prompts, tmp_path / "a", CFG, "m")
    again = generate_images(str(tiny_sd), prompts, tmp_path / "again", CFG, "m")
    b = generate_images(str(tiny_sd), prompts, tmp_path / "b", GenerationConfig(**{**CFG.__dict__, "batch_size": 5}), "m")
    c = generate_images(str(tiny_sd), prompts.iloc[::-1], tmp_path / "c", GenerationConfig(**{**CFG.__dict__, "batch_size": 1}), "m")
    pa, p2, pb, pc = (_pixels(tmp_path / d, m) for d, m in (("a", a), ("again", again), ("b", b), ("c", c)))
    for f in pa:
        assert np.array_equal(pa[f], p2[f]), f  # same settings: bit-identical
        for other in (pb[f], pc[f]):  # other batch sizes: same noise; batched convolutions round differently
            diff = np.abs(pa[f].astype(int) - other.astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, f
    assert np.abs(pa[a["file"][0]].astype(int) - pa[a["file"][1]].astype(int)).mean() > 10


def test_generation_is_idempotent_and_resumes(tmp_path, prompts, tiny_sd):
    first = generate_images(str(tiny_sd), prompts, tmp_path, CFG, "m")
    mtimes = {f: (tmp_path / f).stat().st_mtime_ns for f in first["file"]}
    again = generate_images(str(tiny_sd), prompts, tmp_path, CFG, "m")
    assert {f: (tmp_path / f).stat().st_mtime_ns for f in again["file"]} == mtimes
    pd.testing.assert_frame_equal(first.drop(columns="wall_time_s"), again.drop(columns="wall_time_s"))

    # An interrupted run: only a partial manifest with two images survives; the rest is made anew.
    (tmp_path / "manifest.parquet").rename(tmp_path / PARTIAL)
    part = pd.read_parquet(tmp_path / PARTIAL).iloc[:2]
    part.to_parquet(tmp_path / PARTIAL)
    for f in first["file"][2:]:
        (tmp_path / f).unlink()
    resumed = generate_images(str(tiny_sd), prompts, tmp_path, CFG, "m")
    assert all((tmp_path / f).stat().st_mtime_ns == mtimes[f] for f in first["file"][:2])
    assert list(resumed["file"]) == list(first["file"])
    generate_images(str(tiny_sd), prompts, tmp_path / "fresh", CFG, "m")
    for f in first["file"]:  # a resumed run's images equal an uninterrupted run's, bit for bit
        assert np.array_equal(np.asarray(Image.open(tmp_path / f)), np.asarray(Image.open(tmp_path / "fresh" / f)))


def test_changed_settings_regenerate(tmp_path, prompts, tiny_sd):
    first = generate_images(str(tiny_sd), prompts, tmp_path, CFG, "m")
    before = _pixels(tmp_path, first)
    more = generate_images(str(tiny_sd), prompts, tmp_path, GenerationConfig(**{**CFG.__dict__, "steps": 3}), "m")
    assert (more["steps"] == 3).all()
    after = _pixels(tmp_path, more)
    assert any(not np.array_equal(before[f], after[f]) for f in before)


def test_missing_local_model_is_one_line(tmp_path, prompts):
    from kd_core.errors import KDError

    with pytest.raises(KDError, match="local path './nowhere' does not exist"):
        generate_images("./nowhere", prompts, tmp_path, CFG, "m")


def test_retrained_model_in_place_regenerates(tmp_path, prompts, tiny_sd):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    first = generate_images(str(model), prompts, tmp_path / "img", CFG, "m")
    mtimes = {f: (tmp_path / "img" / f).stat().st_mtime_ns for f in first["file"]}
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes())  # same folder, rewritten weights
    generate_images(str(model), prompts, tmp_path / "img", CFG, "m")
    assert all((tmp_path / "img" / f).stat().st_mtime_ns != mtimes[f] for f in first["file"])
