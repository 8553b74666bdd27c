import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from kd_core.captions import DataConfig, load_pairs
from kd_core.errors import KDError
from kd_core.generate import GenerationConfig, generate_images
from kd_core.prompts import PromptConfig, synthesize_prompts
from kd_core.train.loop import TrainConfig
from kd_core.train.lora import KOHYA_FILE, UNET_TARGETS, LoRAConfig, train_lora

TRAIN = TrainConfig(max_steps=3, batch_size=2, lr=5e-2, lr_scheduler="constant", checkpoint_every=2, device="cpu")
LORA = LoRAConfig(rank=4, alpha=8, dropout=0.1, resolution=64, val_fraction=0.25)


@pytest.fixture(scope="module")
def teacher_images(tmp_path_factory, tiny_sdxl):
    out = tmp_path_factory.mktemp("teacher")
    prompts = synthesize_prompts(PromptConfig(grammar="dogs", filler_grammar="artistic", n_train=6, n_eval=2, n_filler=1))
    generate_images(str(tiny_sdxl), prompts["train"], out, GenerationConfig(steps=2, resolution=64, batch_size=3, device="cpu"), "teacher")
    return out / "manifest.parquet"


def _sample(pipe, seed=0):
    return pipe("a professional photo of a pug sleeping", num_inference_steps=2, height=64, width=64,
                generator=torch.Generator().manual_seed(seed), output_type="np").images


# tiny_sd: every layer kind config/config.yaml targets (diffusers' key conversion once lost the
# attention half of such an adapter on reload); tiny_sdxl: the default attention targets
EVERY_LAYER = UNET_TARGETS + ("proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2", "conv_shortcut",
                              "time_emb_proj")


@pytest.mark.parametrize(("student", "targets"), [("tiny_sd", EVERY_LAYER), ("tiny_sdxl", UNET_TARGETS)])
def test_lora_trains_saves_and_reloads(request, tmp_path, teacher_images, student, targets):
    source = str(request.getfixturevalue(student))
    cfg = LoRAConfig(**{**LORA.__dict__, "unet_targets": targets})
    result = train_lora(source, DataConfig(str(teacher_images)), tmp_path / "adapter", tmp_path / "run",
                        LoRAConfig(**{**cfg.__dict__, "kohya": True}), TRAIN)
    assert result.steps == 3
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == [KOHYA_FILE, "lora_config.json", "pytorch_lora_weights.safetensors"]
    weights = load_file(tmp_path / "adapter" / "pytorch_lora_weights.safetensors")
    assert any(".to_q.lora_A.weight" in k for k in weights) and all(k.startswith("unet.") for k in weights)
    assert any(k.startswith("lora_unet_") for k in load_file(tmp_path / "adapter" / KOHYA_FILE))
    loss = pd.read_parquet(tmp_path / "run" / "loss.parquet")
    assert {"loss", "task_mse", "lr"} <= set(loss["term"]) and (loss["split"] == "val").any()

    base = DiffusionPipeline.from_pretrained(source)
    from kd_core.models.loading import load_pipeline

    tuned = load_pipeline(source, torch.device("cpu"), torch.float32, lora=str(tmp_path / "adapter"))
    assert not any(m.training for m in tuned.unet.modules())  # no LoRA dropout while sampling
    present = {t for t in targets for n, _ in base.unet.named_modules() if n.endswith("." + t)}
    adapted = {t for t in targets for n, m in tuned.unet.named_modules()
               if n.endswith("." + t) and len(getattr(m, "lora_A", ()))}
    assert present == set(targets) and adapted == present  # every target layer's adapter came back
    a, b = _sample(base), _sample(tuned)
    assert np.abs(a - b).max() > 1e-3  # the adapter changes the images
    assert np.array_equal(b, _sample(tuned))  # and sampling is deterministic
    # in-memory tuned model == reloaded adapter: apply the checkpointed weights to a fresh LoRA model
    from kd_core.train.loop import complete_checkpoints
    from kd_core.train.lora import add_lora

    mem = DiffusionPipeline.from_pretrained(source)
    modules = torch.nn.ModuleDict(add_lora(mem, cfg))
    ckpt = complete_checkpoints(tmp_path / "run" / "checkpoints")[-1] / "trainable.safetensors"
    missing, unexpected = modules.load_state_dict(load_file(ckpt), strict=False)
    assert not unexpected
    modules.eval()
    assert np.array_equal(_sample(mem), b)


def test_nan_loss_stops_and_writes_no_adapter(tmp_path, teacher_images, tiny_sd, monkeypatch):
    import kd_core.train.diffusion as diffusion

    real = diffusion.F.mse_loss
    monkeypatch.setattr(diffusion.F, "mse_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(KDError, match="the loss became nan at step 0"):
        train_lora(str(tiny_sd), DataConfig(str(teacher_images)), tmp_path / "adapter", tmp_path / "run", LORA, TRAIN)
    assert not (tmp_path / "adapter").exists()


def test_caption_folder_and_its_errors(tmp_path, teacher_images):
    folder = tmp_path / "wikiart"
    folder.mkdir()
    man = pd.read_parquet(teacher_images)
    for f in man["file"][:3]:
        (folder / f).write_bytes((teacher_images.parent / f).read_bytes())
    pd.DataFrame({"file_name": man["file"][:3], "text": ["an impressionist painting"] * 3}).to_json(
        folder / "metadata.jsonl", orient="records", lines=True)
    pairs = load_pairs(DataConfig(str(folder)))
    assert len(pairs) == 3 and (pairs["prompt"] == "an impressionist painting").all()
    (folder / man["file"][0]).unlink()
    with pytest.raises(KDError, match="1 image file\\(s\\) missing"):
        load_pairs(DataConfig(str(folder)))
    with pytest.raises(KDError, match="has no metadata.jsonl"):
        load_pairs(DataConfig(str(tmp_path)))


@pytest.mark.parametrize(("student", "p"), [("tiny_sd", 1.0), ("tiny_sdxl", 1.0), ("tiny_sd", 0.0)])
def test_proportion_empty_prompts_trains_on_the_empty_prompt(request, tmp_path, teacher_images, monkeypatch, student, p):
    """p = 1: every training step conditions on the empty prompt (SDXL: its pooled embedding too);
    validation always on the captions; p = 0: never the empty prompt."""
    import kd_core.train.lora as lora
    from kd_core.train.data import encode_text_batch

    seen, pipes = [], []
    real_load = lora.load_pipeline

    def load(*args, **kwargs):
        pipe = real_load(*args, **kwargs)
        pipe.unet.register_forward_pre_hook(
            lambda m, a, kw: seen.append((torch.is_grad_enabled(), kw["encoder_hidden_states"].clone(),
                                          kw.get("added_cond_kwargs", {}).get("text_embeds"))), with_kwargs=True)
        pipes.append(pipe)
        return pipe

    monkeypatch.setattr(lora, "load_pipeline", load)
    cfg = LoRAConfig(**{**LORA.__dict__, "proportion_empty_prompts": p})
    train_lora(str(request.getfixturevalue(student)), DataConfig(str(teacher_images)), tmp_path / "adapter",
               tmp_path / "run", cfg, TRAIN)
    empty = encode_text_batch(pipes[0], [""])
    train = [s for s in seen if s[0]]
    val = [s for s in seen if not s[0]]
    assert len(train) == TRAIN.max_steps and val

    def is_empty(emb, pooled):
        same = torch.allclose(emb, empty["prompt_embeds"].expand_as(emb))
        if "pooled_embeds" in empty:
            assert pooled is not None
            assert torch.allclose(pooled, empty["pooled_embeds"].expand_as(pooled)) == same
        return same

    dropped = [is_empty(e, pl) for _, e, pl in train]
    assert dropped == [p == 1.0] * TRAIN.max_steps
    assert not any(is_empty(e, pl) for _, e, pl in val)


@pytest.mark.parametrize("student", ["tiny_sd", "tiny_sdxl"])
def test_kohya_file_samples_as_the_diffusers_adapter(request, tmp_path, teacher_images, student):
    """alpha (8) != rank (4), U-Net and text encoder(s) adapted: the kohya file, read by diffusers'
    kohya loader, carries the trained scale alpha / rank (diffusers' converter writes alpha = rank)."""
    source = str(request.getfixturevalue(student))
    cfg = LoRAConfig(**{**LORA.__dict__, "text_encoder": True, "kohya": True})
    train_lora(source, DataConfig(str(teacher_images)), tmp_path / "adapter", tmp_path / "run", cfg, TRAIN)
    alphas = {k: v for k, v in load_file(tmp_path / "adapter" / KOHYA_FILE).items() if k.endswith(".alpha")}
    assert alphas and all(float(v) == cfg.alpha for v in alphas.values())
    assert any(k.startswith("lora_te") for k in alphas)
    diffusers_format = DiffusionPipeline.from_pretrained(source)
    diffusers_format.load_lora_weights(tmp_path / "adapter")
    kohya = DiffusionPipeline.from_pretrained(source)
    kohya.load_lora_weights(tmp_path / "adapter", weight_name=KOHYA_FILE)
    base, a, b = _sample(DiffusionPipeline.from_pretrained(source)), _sample(diffusers_format), _sample(kohya)
    assert np.abs(base - a).max() > 1e-3  # the adapter matters
    assert np.abs(a - b).max() < 1e-5, f"kohya and diffusers adapters sample {np.abs(a - b).max():.3g} apart"


def test_a_lora_target_that_names_no_module_stops_before_any_work(tmp_path, tiny_sd, teacher_images):
    """A built model's targets are checked by the job (a local folder's, when the config is read)."""
    cfg = LoRAConfig(**{**LORA.__dict__, "unet_targets": ("to_q", "nosuch_proj")})
    with pytest.raises(KDError, match=r"config key 'lora.unet_targets' has \['nosuch_proj'\], which name no module of the "
                                      r"student's unet; its Linear and Conv layers are named e\.g\. \["):
        train_lora(str(tiny_sd), DataConfig(str(teacher_images)), tmp_path / "adapter", tmp_path / "run", cfg, TRAIN)
    assert not (tmp_path / "run").exists() and not (tmp_path / "adapter").exists()


def test_bf16_training_keeps_frozen_weights_in_bf16_and_adapters_in_fp32(tmp_path, teacher_images, tiny_sd):
    from kd_core.train.lora import add_lora

    pipe = DiffusionPipeline.from_pretrained(str(tiny_sd))
    pipe.text_encoder._keep_in_fp32_modules = ["final_layer_norm"]  # a class's fp32 modules stay fp32
    add_lora(pipe, LORA, torch.bfloat16)
    text = {n: p.dtype for n, p in pipe.text_encoder.named_parameters()}
    assert {d for n, d in text.items() if "final_layer_norm" in n} == {torch.float32}
    assert {d for n, d in text.items() if "final_layer_norm" not in n} == {torch.bfloat16}
    frozen = {p.dtype for p in pipe.unet.parameters() if not p.requires_grad}
    trained = {p.dtype for p in pipe.unet.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trained == {torch.float32}  # as diffusers' LoRA scripts cast them
    assert {p.dtype for p in pipe.vae.parameters()} == {torch.float32}  # the VAE encoded the cache: left as it is

    train = TrainConfig(**{**TRAIN.__dict__, "mixed_precision": "bf16"})
    result = train_lora(str(tiny_sd), DataConfig(str(teacher_images)), tmp_path / "adapter", tmp_path / "run", LORA, train)
    assert result.steps == 3
    weights = load_file(tmp_path / "adapter" / "pytorch_lora_weights.safetensors")
    assert weights and all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())
    loss = pd.read_parquet(tmp_path / "run" / "loss.parquet")
    assert (loss["split"] == "val").any() and np.isfinite(loss["value"]).all()  # validated in bf16 as well


_SAVE = """
import sys, torch
from kd_core.models.loading import load_pipeline
from kd_core.train.lora import LoRAConfig, add_lora, save_lora
pipe = load_pipeline(sys.argv[1], torch.device("cpu"), torch.float32)
torch.manual_seed(0)
modules = add_lora(pipe, LoRAConfig(rank=2, unet_targets=("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")))
save_lora(pipe, modules, sys.argv[2])
"""


def test_the_same_adapter_is_the_same_file_in_any_process(tmp_path, tiny_sd):
    """Two processes with other string hashing (peft keeps target_modules as a set) write the same
    bytes: a generation or training keyed on the adapter's content does not start again."""
    import os
    import subprocess
    import sys

    logs = {seed: open(tmp_path / f"{seed}.log", "w") for seed in ("1", "2")}  # noqa: SIM115 - closed below
    procs = {seed: subprocess.Popen([sys.executable, "-c", _SAVE, str(tiny_sd), str(tmp_path / seed)],
                                    env={**os.environ, "PYTHONHASHSEED": seed}, stdout=log, stderr=subprocess.STDOUT)
             for seed, log in logs.items()}  # side by side: each is mostly its imports
    for seed, proc in procs.items():
        code = proc.wait()
        logs[seed].close()
        assert code == 0, (tmp_path / f"{seed}.log").read_text()[-2000:]
    files = [(tmp_path / seed / "pytorch_lora_weights.safetensors").read_bytes() for seed in ("1", "2")]
    assert files[0] == files[1]
