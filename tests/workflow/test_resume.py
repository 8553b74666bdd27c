"""SIGKILL jobs mid-run, rerun the workflow: training resumes, every job ends as if never interrupted."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kd_core.runlog import RESOURCES
from kd_core.train.loop import complete_checkpoints

from .conftest import SNAKEMAKE, copy_repo, edited_config, planned_jobs, run
from .outputs import differences

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


#: Every kind of job of the smoke run -> (its rule, the name its logs start with). A job opens its log
#: when its work begins (after its imports), so a kill after the log appears lands in the work
#: itself, which takes 0.2-3 s per job in the smoke run.
JOB_KINDS = {
    "world data": ("world_data", "world_data"), "toy autoencoder and text encoder": ("toy_base", "toy_base"),
    "toy U-Net": ("toy_unet", "toy_unet_"), "attribute classifier": ("world_classifier", "world_classifier"),
    "generation": ("generate", "generate_"), "pairwise metrics": ("pairwise", "pairwise_"),
    "distribution metrics": ("distribution", "distribution"), "LoRA training": ("train_lora", "train_lora"),
    "block-KD training": ("train_block_kd", "train_block_kd_"),
    "width-student training": ("train_width_student", "train_width_student_"),
    "timestep MSE": ("timestep_mse", "timestep_mse"), "trajectories": ("trajectory", "trajectory"),
    "DM-KD generation": ("dmkd_generate", "dmkd_generate_"), "DM-KD teacher training": ("dmkd_teacher", "dmkd_teacher"),
    "DM-KD student training": ("dmkd_student", "dmkd_student_"), "efficiency": ("efficiency", "efficiency"),
    # (attribute_summary and dmkd_summary are left out: their work after the log opens takes milliseconds,
    # too short for a kill to land in, measured: never caught in four tries each)
    "statistics": ("summary", "summary"), "paired differences": ("improvement", "improvement"),
    "size latency": ("size_latency", "size_latency"), "size summary": ("size_study_summary", "size_study_summary"),
    "block-KD latency": ("block_kd_latency", "block_kd_latency"),
    "comparison grids": ("comparison_grid", "comparison_grid_"),
    "model comparison": ("comparison_models", "comparison_models"),
    "figures": ("figure_loss", "figure_"), "paper": ("paper", "paper"),
}


def _kill_once(repo: Path, prefix: str, delay: float, env: dict, *args: str) -> Path | None:
    """Run the workflow, SIGKILL it ``delay`` seconds after a job whose log starts with ``prefix``
    begins; the killed job's log if that job was still running, else None."""
    logs = repo / "results" / "smoke" / "logs"
    started = time.time()
    proc = subprocess.Popen([*SNAKEMAKE, "--cores", "2", "--configfile", "config/smoke.yaml", *args], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    fresh = []
    try:
        while not fresh and proc.poll() is None:
            fresh = [p for p in logs.glob(f"{prefix}*.log") if p.stat().st_mtime >= started] if logs.is_dir() else []
            time.sleep(0.02)
        if fresh:
            time.sleep(delay)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return next((p for p in fresh if RESOURCES not in p.read_text()), None)


@pytest.mark.slow
@pytest.mark.soak  # ~15 min on 2 cores: outside .ci/run's budget (make test TIERS=soak)
def test_sigkill_in_every_kind_of_job_then_a_rerun_equals_the_uninterrupted_run(smoke_repo, tmp_path):
    """The smoke run from scratch, killed (SIGKILL, the whole process group) at a random point of the
    work of one job of each kind in turn, rerun each time; the finished run equals the uninterrupted
    one: every table by value, every weights file tensor by tensor, every sampled image byte by byte,
    every JSON, CSV, Markdown and LaTeX file of the paper and the models (tests/workflow/outputs.py)."""
    (tmp_path / "repo").mkdir()
    repo = copy_repo(tmp_path / "repo")
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "2", "TQDM_MININTERVAL": "5"}
    rng = random.Random(16)
    killed = {}
    for kind, (rule, prefix) in JOB_KINDS.items():
        delay, again = rng.uniform(0.05, 0.8), ()
        for _ in range(4):
            log = _kill_once(repo, prefix, delay, env, *again)
            run(repo, "--unlock", "--configfile", "config/smoke.yaml")
            if log is not None:
                killed[kind] = f"{log.stem} after {delay:.2f} s"
                print(f"{kind}: killed {killed[kind]}")
                break
            # the job ended before the kill: run one of its kind again (and nothing after it), kill sooner
            delay, again = delay / 3, ("--forcerun", rule, "--until", rule)
    assert set(killed) == set(JOB_KINDS), f"never caught running: {set(JOB_KINDS) - set(killed)}"
    run(repo, "--configfile", "config/smoke.yaml")
    assert differences(smoke_repo / "results" / "smoke", repo / "results" / "smoke") == []
    assert planned_jobs(repo, "--configfile", "config/smoke.yaml") == {}
