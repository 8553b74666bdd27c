"""SIGKILL the LoRA training job mid-run, rerun the workflow: it resumes and ends bit-identical."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

from kd_core.train.loop import complete_checkpoints

from .conftest import SNAKEMAKE, edited_config, run

pytestmark = pytest.mark.workflow  # runs Snakemake end to end


def _adapter(repo):
    return load_file(repo / "results" / "smoke" / "models" / "lora_student" / "pytorch_lora_weights.safetensors")


@pytest.mark.slow
def test_sigkill_during_lora_training_resumes_to_the_same_adapter(smoke_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(smoke_repo, repo, ignore=shutil.ignore_patterns("locks"))
    long = edited_config(repo, "smoke_long.yaml", "rank: 4\n  alpha: 8\n  val_fraction: 0.2\n  train: {max_steps: 3, batch_size: 2, lr: 1.0e-3, checkpoint_every: 2}",
                         "rank: 4\n  alpha: 8\n  val_fraction: 0.2\n  train: {max_steps: 120, batch_size: 2, lr: 1.0e-3, checkpoint_every: 10}")
    ckpts = repo / "results" / "smoke" / "train" / "lora" / "checkpoints"
    shutil.rmtree(ckpts)
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([*SNAKEMAKE, "--cores", "2", "--configfile", str(long), "--until", "train_lora", "--forcerun", "train_lora"], cwd=repo,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while not any(p.name >= "step-00000020" for p in complete_checkpoints(ckpts)):  # the event: a checkpoint past step 20
        assert proc.poll() is None, "the training job ended before its step-20 checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = complete_checkpoints(ckpts)[-1]
    assert "step-00000020" <= killed.name < "step-00000120"
    run(repo, "--unlock", "--configfile", str(long))
    run(repo, "--configfile", str(long), "--until", "train_lora")
    log = (repo / "results" / "smoke" / "logs" / "train_lora.log").read_text()
    assert f"resuming from {os.path.relpath(killed, repo)}" in log
    resumed = _adapter(repo)

    shutil.rmtree(ckpts)  # the same run, uninterrupted
    run(repo, "--configfile", str(long), "--until", "train_lora", "--forcerun", "train_lora")
    assert "resuming" not in (repo / "results" / "smoke" / "logs" / "train_lora.log").read_text()
    fresh = _adapter(repo)
    assert resumed.keys() == fresh.keys()
    for k in fresh:  # bit for bit, as the README promises for CPU runs
        assert torch.equal(resumed[k], fresh[k]), k
