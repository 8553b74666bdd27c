"""LoRA, block KD (an SD 1.x and an SDXL teacher), width distillation and step distillation in two CPU processes (gloo, through kd_core.launch):
both ranks end with the same weights, and those of one process trained on the same global batch."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from ..conftest import random_image_manifest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Each rank writes its trained weights (the Trainer's unwrapped model at the end) to rank<i>.safetensors.
# Arguments: the number of processes, the images, then (kind, source, out) triples, trained one after the
# other in the same processes (one launch for several trainers: the start of a process is most of a
# tiny run's time).
SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from safetensors.torch import save_file
    from kd_core.launch import launch_processes
    from kd_core.train import loop
    from kd_core.captions import DataConfig

    n, images, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    if not launch_processes(__file__, int(n)):
        finish = loop.Trainer._finish

        def keep(self, run):
            result = finish(self, run)
            save_file(loop.trainable_state(self.unwrapped), f"{out}/rank{self.accelerator.process_index}.safetensors")
            return result

        loop.Trainer._finish = keep
        for kind, source, out in zip(rest[0::3], rest[1::3], rest[2::3]):
            # SGD: a step linear in the gradient (AdamW's first steps divide by the gradient's size and make
            # float noise in a near-zero gradient a step of up to lr: 2e-5 of a 2.5e-4 step measured)
            train = loop.TrainConfig(max_steps=3, batch_size=4, lr=0.05, optimizer="sgd", momentum=0.9, checkpoint_every=2,
                                     device="cpu")
            data = DataConfig(source=images)
            if kind == "lora_bf16":  # the frozen weights in bf16, the adapters in fp32, under bf16 autocast
                train, kind = loop.TrainConfig(**{**train.__dict__, "mixed_precision": "bf16"}), "lora"
            if kind == "lora":
                from kd_core.train.lora import LoRAConfig, train_lora
                # dropout 0: LoRA dropout masks are drawn per process, so only without them can one process match two
                cfg = LoRAConfig(rank=4, alpha=8, dropout=0.0, text_encoder=True, resolution=64, val_fraction=0.25)
                train_lora(source, data, out + "/adapter", out + "/run", cfg, train)
            elif kind in ("block_kd", "block_kd_xl"):  # an SD 1.x-layout teacher's bk_small; an SDXL-layout one's SSD-1B
                from kd_core.train.block_kd import BlockKDConfig, train_block_kd
                level = "ssd_1b" if kind == "block_kd_xl" else "bk_small"
                train_block_kd(source, data, out + "/model", out + "/run", BlockKDConfig(level=level, val_fraction=0.25), train)
            elif kind == "classifier":  # DM-KD: a ResNet student taught by a random teacher on random images
                import torch
                from kd_core.image_folder import LabelledImages
                from kd_core.train.classifier import ClassifierConfig, ClassifierModelConfig, build_classifier, train_classifier
                gen = torch.Generator().manual_seed(0)
                labelled = LabelledImages(torch.randint(0, 255, (24, 3, 16, 16), dtype=torch.uint8, generator=gen),
                                          torch.arange(24) % 2, ["a", "b"])
                model = ClassifierModelConfig(embedding_size=8, hidden_sizes=(8, 16), depths=(1, 1), image_size=16)
                torch.manual_seed(1)
                teacher = build_classifier(model, labelled.classes)
                cfg = ClassifierConfig(objective="kd", model=model, val_fraction=0.25)
                train_classifier(labelled, labelled, out + "/model", out + "/run", out + "/predictions.parquet", cfg, train, teacher)
            elif kind in ("lcm_lora", "lcm"):  # step distillation: LCM-LoRA, and the full U-Net with its EMA target
                from kd_core.train.step_distill import StepDistillConfig, train_step_distill
                # L2: the Huber loss's gradient d / sqrt(d^2 + c^2) turns float noise of order 1e-7 in the
                # targets (batches of 2 against 4) into up to 1/c = 1000 times that (1.3e-6 measured)
                cfg = StepDistillConfig(method=kind, rank=4, guidance_min=2.0, guidance_max=4.0, guidance_embedding_dim=32,
                                        ema_decay=0.5, resolution=64, val_fraction=0.25, loss="l2")
                train_step_distill(source, data, out + "/model", out + "/run", cfg, train)
            else:
                from kd_core.train.size_study import SizeStudyConfig, train_width_student
                train_width_student(source, data, out + "/model", out + "/run", SizeStudyConfig(factor=0.5, val_fraction=0.25), train)
""")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return random_image_manifest(tmp_path_factory.mktemp("images"), 10)


def _start(script, jobs, images, n):
    """Start ``jobs`` ((kind, source, out folder), ...), one after the other in ``n`` processes (one launch)."""
    for _, _, out in jobs:
        out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    args = [str(a) for job in jobs for a in job]
    log = open(jobs[0][2].parent / f"train-{n}.log", "w")  # noqa: SIM115 - closed by _finish
    return subprocess.Popen([sys.executable, str(script), str(n), str(images), *args], stdout=log,
                            stderr=subprocess.STDOUT, env=env), log, jobs, n


def _finish(started):
    """Wait for :func:`_start`'s launch; each out folder's weights of every rank."""
    proc, log, jobs, n = started
    code = proc.wait(timeout=600)
    log.close()
    assert code == 0, open(log.name).read()[-4000:]
    return [[load_file(out / f"rank{i}.safetensors") for i in range(n)] for _, _, out in jobs]


def _train(script, jobs, images, n):
    return _finish(_start(script, jobs, images, n))


TRAINERS = {"lora": "tiny_sd", "block_kd": "tiny_sd15", "block_kd_xl": "tiny_sdxl_layout", "width": "tiny_sd15",
            "lcm_lora": "tiny_sd", "lcm": "tiny_sd"}


@pytest.fixture(scope="module")
def trained(request, tmp_path_factory, images):
    """The three diffusion trainers in two processes (one launch), then in one: kind -> (its folder,
    rank 0's weights, rank 1's, the single process's)."""
    root = tmp_path_factory.mktemp("two_processes")
    script = root / "train.py"
    script.write_text(SCRIPT)
    sources = {kind: request.getfixturevalue(model) for kind, model in TRAINERS.items()}
    started = [_start(script, [(k, sources[k], root / name / k) for k in TRAINERS], images, n)
               for name, n in (("two", 2), ("one", 1))]  # side by side: most of each is starting processes
    two, one = (_finish(s) for s in started)
    return {k: (root, *ranks, single) for k, ranks, (single,) in zip(TRAINERS, two, one, strict=True)}


@pytest.mark.parametrize("kind", list(TRAINERS))
def test_two_processes_train_the_weights_of_one(trained, kind):
    root, rank0, rank1, one = trained[kind]
    start = load_file(root / "one" / kind / "run" / "checkpoints" / "step-00000002" / "trainable.safetensors")
    assert rank0.keys() == rank1.keys() == one.keys() and rank0
    if kind == "lora":  # the text encoder's adapters trained too: DDP saw its forward
        assert any(k.startswith("text_encoder.") for k in rank0) and any(k.startswith("unet.") for k in rank0)
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), f"{k}: the ranks' weights differ"
    # one process over the same 4 examples per step: equal up to float summation order (the gradient
    # of a 4-example mean against the mean of two 2-example gradients; measured 7e-9 to 6e-8 against a
    # last step of 1e-3), within the README's 1e-7. Before the Trainer stepped the lr schedule once per step it was 5e-3.
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    worst = max((rank0[k] - one[k]).abs().max().item() for k in one)
    assert moved > 1e-4 and worst < 1e-7, f"largest difference {worst:.2e} (last step moved weights by up to {moved:.2e})"
    if kind not in ("lora", "lcm_lora"):  # (the adapters: diffusers LoRA folders)
        DiffusionPipeline.from_pretrained(root / "two" / kind / "model")  # the main process wrote the pipeline
    if kind == "lcm":  # the EMA target network followed the same weights in both processes, and in one
        targets = [load_file(root / name / kind / "run" / "checkpoints" / "step-00000003" / "loss_state.safetensors")
                   for name in ("two", "one")]
        assert targets[0].keys() == targets[1].keys()
        # within 1e-7, or two float32 ulps of the value (the weights above differ by < 1e-7; their EMA lerp
        # rounds once more: 1.19e-7, one ulp at |w| ~ 1, measured)
        for k in targets[0]:
            assert torch.allclose(targets[0][k], targets[1][k], rtol=2**-22, atol=1e-7), k


@pytest.mark.slow  # half a minute; the three diffusion trainers above stay in make test
def test_two_processes_train_one_classifier(tmp_path):
    """The DM-KD classifier trains through DDP: both ranks end equal. (Not equal to one process: its
    batch norm takes statistics over each process's share of the batch, as DDP without SyncBatchNorm
    does, and SyncBatchNorm needs CUDA.)"""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    ((rank0, rank1),) = _train(script, [("classifier", "-", tmp_path / "two")], "-", 2)
    assert rank0 and rank0.keys() == rank1.keys()
    # running statistics: each rank's from its last share of the batch (DDP broadcasts rank 0's at each forward)
    params = [k for k in rank0 if not k.endswith(("running_mean", "running_var"))]
    assert len(params) < len(rank0)
    for k in params:
        assert torch.equal(rank0[k], rank1[k]), f"{k}: the ranks' weights differ"


@pytest.mark.slow  # 13 s; the fp32 LoRA run above stays in make test
def test_two_processes_train_lora_in_bf16(tiny_sd, tmp_path, images):
    """Under bf16 autocast the frozen U-Net and text encoder are bf16 (DDP broadcasts them with the fp32
    adapters at the start) and both ranks end with the same fp32 adapters."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    ((rank0, rank1),) = _train(script, [("lora_bf16", tiny_sd, tmp_path / "two")], images, 2)
    assert rank0 and rank0.keys() == rank1.keys()
    for k in rank0:
        assert rank0[k].dtype == torch.float32 and torch.equal(rank0[k], rank1[k]), f"{k}: the ranks' weights differ"
    start = load_file(tmp_path / "two" / "run" / "checkpoints" / "step-00000002" / "trainable.safetensors")
    assert max((rank0[k] - start[k]).abs().max().item() for k in rank0) > 1e-4  # the last step trained
