import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file, save_file

from kd_core.captions import DataConfig
from kd_core.errors import KDError
from kd_core.models.bk_sdm import LEVELS
from kd_core.train.block_kd import BlockKDConfig, train_block_kd
from kd_core.train.distill import kd_terms
from kd_core.train.loop import TrainConfig, complete_checkpoints
from kd_core.train.size_study import SizeStudyConfig, train_width_student

from ..conftest import assert_drawn, random_image_manifest


@pytest.fixture(scope="module")
def teacher_images(tmp_path_factory):
    """Eight 64 px images with prompts, as a generation manifest."""
    return random_image_manifest(tmp_path_factory.mktemp("teacher_images"), 8)


def test_kd_terms_raw_and_weighted():
    out, target = torch.zeros(2, 4, 8, 8), torch.ones(2, 4, 8, 8)
    feats = {"a": torch.ones(2, 3), "b": torch.zeros(2, 3)}
    cfg = BlockKDConfig(w_task=1.0, w_out=0.5, w_feat=0.5)
    t = kd_terms(out, out, target, {"x": feats["a"], "y": feats["b"]}, feats, {"a": "x", "b": "y"}, cfg)
    assert t["task"] == 1 and t["out_kd"] == 0 and t["feat_kd"] == 0 and t["loss"] == 1
    t = kd_terms(out, target, target, {"x": feats["b"]}, feats, {"a": "x"}, cfg)
    assert t["out_kd"] == 1 and t["out_kd_weighted"] == 0.5 and t["feat_kd"] == 1 and t["loss"] == 1 + 0.5 + 0.5
    ablation = kd_terms(out, target, target, {"x": feats["b"]}, feats, {"a": "x"}, BlockKDConfig(feature_kd=False))
    assert ablation["feat_kd"] == 1 and ablation["feat_kd_weighted"] == 0 and ablation["loss"] == 2


@pytest.mark.parametrize("level", ["ssd_1b", "koala_700m"])
def test_sdxl_students_learn_with_micro_conditioning_and_load_in_a_fresh_process(tiny_sdxl_layout, teacher_images,
                                                                                tmp_path, level):
    """An SDXL-layout teacher (depths 2 and 4) into its SSD-1B / KOALA-700M-style student: every KD term
    on SDXL's pooled embedding and size ids (its U-Net refuses a call without them); the student folder
    is a StableDiffusionXLPipeline that plain diffusers loads and samples in a fresh process."""
    cfg = TrainConfig(max_steps=2, batch_size=2, device="cpu", checkpoint_every=1, lr=1e-3)
    features = "self_attention" if level == "koala_700m" else "blocks"  # KOALA's feature choice on its student
    result = train_block_kd(str(tiny_sdxl_layout), DataConfig(source=str(teacher_images)), tmp_path / "model",
                            tmp_path / "run", BlockKDConfig(level=level, val_fraction=0.25, features=features), cfg)
    assert result.steps == 2
    loss = pd.read_parquet(tmp_path / "run" / "loss.parquet")
    train = loss[loss["split"] == "train"].pivot_table(index="step", columns="term", values="value")
    assert (train["feat_kd"] > 0).all() and (train["out_kd"] > 0).all() and train.notna().all().all()
    assert (train["loss"] - train[["task_weighted", "out_kd_weighted", "feat_kd_weighted"]].sum(axis=1)).abs().max() < 1e-5
    code = textwrap.dedent("""
        import json, sys
        import numpy as np, torch
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained(sys.argv[1])
        image = pipe("a small red circle", num_inference_steps=2, height=64, width=64,
                     generator=torch.Generator().manual_seed(0), output_type="np").images[0]
        print(json.dumps({"type": type(pipe).__name__, "finite": bool(np.isfinite(image).all()),
                          "std": float(image.std()), "depths": list(pipe.unet.config.transformer_layers_per_block),
                          "mid": pipe.unet.config.mid_block_type}))
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model")], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["type"] == "StableDiffusionXLPipeline" and info["finite"] and info["std"] > 0
    assert info["depths"] == [1, 2, 2]  # the innermost 4 -> 0.4 x 4 (ssd_1b), 0.5 x 4 (koala_700m), rounded
    assert info["mid"] == ("UNetMidBlock2D" if level == "ssd_1b" else None)
    meta = json.loads((tmp_path / "model" / "block_kd.json").read_text())
    assert meta["params_student"] < meta["params_teacher"] and meta["block_kd"]["features"] == features
    if features == "blocks":
        assert len(meta["feature_map"]) == 6
    else:  # every kept transformer block's self-attention (depths 2 and 2: 2 x 2 down, 2 x 2 + 2 x 2 up)
        assert all(k.endswith(".attn1") for k in meta["feature_map"]) and len(meta["feature_map"]) == 12


def test_an_sdxl_teacher_is_refused_by_the_sd_students(tiny_sdxl_layout, teacher_images, tmp_path):
    cfg = TrainConfig(max_steps=1, batch_size=2, device="cpu")
    with pytest.raises(KDError, match="bk_small is defined for SD 1.x-style U-Nets.*choose one of ssd_1b"):
        train_block_kd(str(tiny_sdxl_layout), DataConfig(source=str(teacher_images)), tmp_path / "m", tmp_path / "r",
                       BlockKDConfig(level="bk_small"), cfg)
    with pytest.raises(KDError, match="width students are defined for SD 1.x-style U-Nets"):
        train_width_student(str(tiny_sdxl_layout), DataConfig(source=str(teacher_images)), tmp_path / "w", tmp_path / "wr",
                            SizeStudyConfig(factor=0.5), cfg)
    assert not (tmp_path / "m").exists() and not (tmp_path / "w").exists()


@pytest.mark.parametrize("level", LEVELS)
def test_train_save_and_load_every_level(tiny_sd15, teacher_images, tmp_path, level):
    cfg = TrainConfig(max_steps=2, batch_size=2, device="cpu", checkpoint_every=1, lr=1e-3)
    result = train_block_kd(str(tiny_sd15), DataConfig(source=str(teacher_images)), tmp_path / "model", tmp_path / "run",
                            BlockKDConfig(level=level, val_fraction=0.25), cfg)
    assert result.steps == 2
    terms = set(pd.read_parquet(tmp_path / "run" / "loss.parquet")["term"])
    assert {"task", "out_kd", "feat_kd", "task_weighted", "out_kd_weighted", "feat_kd_weighted", "loss"} <= terms
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "model")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    unet_cfg = json.loads((tmp_path / "model" / "unet" / "config.json").read_text())
    assert unet_cfg["layers_per_block"] == 1 and (unet_cfg["mid_block_type"] is None) == (level != "bk_base")
    assert len(unet_cfg["block_out_channels"]) == (2 if level == "bk_tiny" else 3)
    image = pipe("a small red circle", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert_drawn(image, (64, 64))
    meta = json.loads((tmp_path / "model" / "block_kd.json").read_text())
    assert meta["params_student"] < meta["params_teacher"] and meta["block_kd"]["level"] == level


SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from kd_core.train import block_kd, distill
    from kd_core.captions import DataConfig
    from kd_core.train.loop import TrainConfig
    delay = float(sys.argv[4])
    terms = distill.kd_terms
    def slow(*a, **k):
        time.sleep(delay)
        return terms(*a, **k)
    distill.kd_terms = slow
    block_kd.train_block_kd(sys.argv[1], DataConfig(source=sys.argv[2]), sys.argv[3] + "/model", sys.argv[3] + "/run",
                            block_kd.BlockKDConfig(level="bk_small", val_fraction=0.25),
                            TrainConfig(max_steps=6, batch_size=2, device="cpu", checkpoint_every=2, lr=1e-3))
""")


@pytest.mark.slow  # a minute; the loop's own SIGKILL test (tests/train/test_loop.py) stays in make test
def test_sigkill_then_rerun_resumes_to_the_same_student(tiny_sd15, teacher_images, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    args = [sys.executable, str(script), str(tiny_sd15), str(teacher_images)]
    proc = subprocess.Popen([*args, str(tmp_path / "a"), "0.5"], stderr=subprocess.DEVNULL)
    while not complete_checkpoints(tmp_path / "a" / "run" / "checkpoints"):  # the event: its first checkpoint
        assert proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert complete_checkpoints(tmp_path / "a" / "run" / "checkpoints") and not (tmp_path / "a" / "model").exists()
    resumed = subprocess.run([*args, str(tmp_path / "a"), "0"], check=True, stderr=subprocess.PIPE, text=True)
    assert "resuming from" in resumed.stderr
    subprocess.run([*args, str(tmp_path / "b"), "0"], check=True, stderr=subprocess.DEVNULL)
    a = load_file(tmp_path / "a" / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit


def test_a_retrained_teacher_restarts_the_run(tiny_sd15, teacher_images, tmp_path):
    """Checkpoints are keyed by the teacher's weights (their bytes) and the data, not by paths or times."""
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_sd15, teacher)
    kw = {"data": DataConfig(source=str(teacher_images)), "cfg": BlockKDConfig(level="bk_small", val_fraction=0.25),
          "train": TrainConfig(max_steps=2, batch_size=2, device="cpu", checkpoint_every=1)}
    first = train_block_kd(str(teacher), out_dir=tmp_path / "m", run_dir=tmp_path / "run", **kw)
    again = train_block_kd(str(teacher), out_dir=tmp_path / "m", run_dir=tmp_path / "run", **kw)
    assert first.resumed_from is None and again.resumed_from == 2  # finished: not trained again
    weights = teacher / "unet" / "diffusion_pytorch_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # rewritten, same bytes
    touched = train_block_kd(str(teacher), out_dir=tmp_path / "m", run_dir=tmp_path / "run", **kw)
    assert touched.resumed_from == 2
    state = load_file(str(weights))
    name = next(k for k in state if k.endswith("conv_out.bias"))
    save_file({**state, name: state[name] + 0.5}, str(weights), metadata={"format": "pt"})  # retrained in place
    retrained = train_block_kd(str(teacher), out_dir=tmp_path / "m", run_dir=tmp_path / "run", **kw)
    assert retrained.resumed_from is None
