import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kd_core.errors import KDError
from kd_core.generate import (
    RECORD,
    GenerationConfig,
    gather_manifests,
    generate_images,
    manifest_path,
)
from kd_core.io import read_metadata
from kd_core.prompts import PromptConfig, synthesize_prompts
from kd_core.shards import Shard

from .conftest import assert_drawn


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
    for f in man["file"]:
        assert_drawn(tmp_path / f, (64, 64))
    assert {"breed", "pose"} <= set(man.columns) and (man["steps"] == 2).all() and (man["dtype"] == "float32").all()
    # the record of the images made, kept beside the manifest (Snakemake deletes the manifest before a rerun)
    cols = ["file", "prompt_id", "seed", "settings_hash"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / RECORD)[cols], man[cols])
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
    (tmp_path / "manifest.parquet").unlink()  # as Snakemake does before it runs a job again: the record remains
    generate_images(str(tiny_sd), prompts, tmp_path, CFG, "m")
    assert {f: (tmp_path / f).stat().st_mtime_ns for f in again["file"]} == mtimes

    # An interrupted run: only a record of two images survives; the rest is made anew.
    (tmp_path / "manifest.parquet").rename(tmp_path / RECORD)
    part = pd.read_parquet(tmp_path / RECORD).iloc[:2]
    part.to_parquet(tmp_path / RECORD)
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


def test_images_follow_the_model_weights_by_content(tmp_path, prompts, tiny_sd):
    """Identical weights rewritten (a re-exported model) keep every image; new weights in the same
    folder (a model retrained in place) make them all anew."""
    import shutil

    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny_sd, model)
    first = generate_images(str(model), prompts, tmp_path / "img", CFG, "m")
    mtimes = {f: (tmp_path / "img" / f).stat().st_mtime_ns for f in first["file"]}
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes())  # same folder, same bytes written again
    generate_images(str(model), prompts, tmp_path / "img", CFG, "m")
    assert all((tmp_path / "img" / f).stat().st_mtime_ns == mtimes[f] for f in first["file"])
    state = load_file(str(weights))
    name = next(k for k in state if k.endswith("conv_out.bias"))
    state[name] = state[name] + 0.5  # retrained: other bytes
    save_file(state, str(weights), metadata={"format": "pt"})
    generate_images(str(model), prompts, tmp_path / "img", CFG, "m")
    assert all((tmp_path / "img" / f).stat().st_mtime_ns != mtimes[f] for f in first["file"])


def test_three_shards_gather_to_the_unsharded_images_and_manifest(tmp_path, prompts, tiny_sd):
    whole = generate_images(str(tiny_sd), prompts, tmp_path / "one", CFG, "m")
    shards = [Shard(i, 3) for i in range(3)]
    parts = [generate_images(str(tiny_sd), prompts, tmp_path / "three", CFG, "m", shard=s) for s in shards]
    assert [len(p) for p in parts] == [2, 2, 1]  # 5 prompts, batch 2: batch-aligned slices
    paths = [manifest_path(tmp_path / "three", s) for s in shards]
    gathered = gather_manifests(paths, prompts, tmp_path / "three" / "manifest.parquet")
    timing = ["wall_time_s"]
    pd.testing.assert_frame_equal(gathered.drop(columns=timing), whole.drop(columns=timing))
    stored = pd.read_parquet(tmp_path / "three" / "manifest.parquet")
    pd.testing.assert_frame_equal(stored.drop(columns=timing), pd.read_parquet(tmp_path / "one" / "manifest.parquet").drop(columns=timing))
    one, three = _pixels(tmp_path / "one", whole), _pixels(tmp_path / "three", gathered)
    assert all(np.array_equal(one[f], three[f]) for f in one)  # bit-identical
    assert read_metadata(tmp_path / "three" / "manifest.parquet")["shards"] == 3
    # idempotent: a shard rerun reuses its images (same files, nothing regenerated)
    mtimes = {f: (tmp_path / "three" / f).stat().st_mtime_ns for f in gathered["file"]}
    generate_images(str(tiny_sd), prompts, tmp_path / "three", CFG, "m", shard=shards[1])
    assert {f: (tmp_path / "three" / f).stat().st_mtime_ns for f in gathered["file"]} == mtimes
    # a missing shard row is one clear error
    with pytest.raises(KDError, match="in no shard"):
        gather_manifests(paths[:2], prompts, tmp_path / "bad.parquet")
    # more shards than batches: the surplus shard is empty and needs no model
    empty = generate_images("/nonexistent/model", prompts.iloc[:1], tmp_path / "four", CFG, "m", shard=Shard(0, 4))
    assert empty.empty and manifest_path(tmp_path / "four", Shard(0, 4)).is_file()


def test_fast_paths_are_settings_of_the_images_once_on(tmp_path, prompts, tiny_sd):
    """Off (the default), the manifest's settings are those of a plain run; channels-last on is another
    setting (its images are remade) and gives the same pixels to a grey level."""
    from dataclasses import replace

    from kd_core.fast_paths import FastPaths

    plain = generate_images(str(tiny_sd), prompts, tmp_path / "plain", CFG, "m")
    assert "fast_paths" not in read_metadata(tmp_path / "plain" / "manifest.parquet")["settings"]
    fast_cfg = replace(CFG, fast_paths=FastPaths(channels_last=True))
    fast = generate_images(str(tiny_sd), prompts, tmp_path / "fast", fast_cfg, "m")
    assert read_metadata(tmp_path / "fast" / "manifest.parquet")["settings"]["fast_paths"]["channels_last"] is True
    assert set(fast["settings_hash"]) != set(plain["settings_hash"])
    a, b = _pixels(tmp_path / "plain", plain), _pixels(tmp_path / "fast", fast)
    assert max(int(np.abs(a[f].astype(int) - b[f].astype(int)).max()) for f in a) <= 1
