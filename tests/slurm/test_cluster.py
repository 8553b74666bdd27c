"""profiles/slurm on a real single-node SLURM cluster (make test-slurm; skipped in the plain test run).

config/smoke.yaml runs with ``--profile profiles/slurm``, in its own repository copy, against
the test cluster that scripts/slurm/test.sh starts (scripts/slurm/start_cluster.sh: fake GPUs as
GRES, squeue for job states). While the SLURM run goes, the teacher's generate job (a GPU job
everything downstream needs) is cancelled with scancel once its script has started; the
profile's retries must resubmit it and the run still finish.

Then: every job that is not a local rule ran as a SLURM job (the Snakemake log names its SLURM job
id, slurmctld still knows the job and its rule, .snakemake/slurm_logs has its log), GPU rules went
to the GPU partition with a GPU of the site's model, CPU rules to the CPU partition, figures and
the paper ran on the host, and the outputs equal the local run's: prompts, image manifests and
pixels, metric and training-loss tables exactly, bar a model-folder fingerprint (file mtimes) and
timings. Nothing is lost to the cancellation: the cancelled job's images and all that depends on
them equal the local run's too. The local run is the test session's smoke run (``smoke_repo``,
shared with the workflow tests): .ci/run runs this module in the same session as the whole suite.

Needs KD_SLURM_TEST=1, and SLURM_CONF and PATH naming the cluster (scripts/slurm/test.sh sets them).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ..workflow.conftest import copy_repo
from .common import SITE_VARS, gpu_rules, model_thread_rules, printed_jobs, without_job_logs

pytestmark = pytest.mark.skipif(
    os.environ.get("KD_SLURM_TEST") != "1" or not os.environ.get("SLURM_CONF"),
    reason="needs the SLURM test cluster: make test-slurm (KD_SLURM_TEST=1, SLURM_CONF)")

SMOKE = ("--configfile", "config/smoke.yaml")
OUT = Path("results") / "smoke"
CANCEL_COMMENT = "rule_generate_wildcards_teacher_train"  # the plugin's sbatch --comment of a job: rule_<rule>_wildcards_<values joined by _>
CANCEL_LOG = OUT / "logs" / "generate_teacher_train.log"  # written once the job's script runs
GPU_PARTITION, CPU_PARTITION, GPU_MODEL = "gpu", "cpu", "kdfake"  # as in scripts/slurm/start_cluster.sh
RUN_TIMEOUT = 45 * 60

def _env(repo: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SITE_VARS}
    return {**env, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "2", "TQDM_MININTERVAL": "5", **extra}


def _scontrol_jobs() -> dict[str, dict[str, str]]:
    """Every job slurmctld still holds (MinJobAge=3600 keeps finished ones): id -> its fields."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, check=True).stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def _cancel_when_started(repo: Path, proc: subprocess.Popen, cancelled: dict) -> None:
    """scancel the teacher's generate job once its script has started (its log exists)."""
    while proc.poll() is None:
        try:
            jobs = _scontrol_jobs()
        except subprocess.CalledProcessError:  # slurmctld busy: ask again
            jobs = {}
        for job_id, job in jobs.items():
            if (job.get("Comment") == CANCEL_COMMENT and job.get("JobState") == "RUNNING"
                    and (repo / CANCEL_LOG).is_file()):
                subprocess.run(["scancel", job_id], check=True)
                cancelled.update(job_id=job_id, at=time.time())
                return
        time.sleep(0.5)


def _start(cmd: list[str], repo: Path, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    out = repo.parent / f"{repo.name}.out"  # a file, not a pipe: nobody reads it while the run goes
    with open(out, "w") as fh:
        return subprocess.Popen(cmd, cwd=repo, env=env, stdout=fh, stderr=subprocess.STDOUT, text=True), out


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # Snakemake cancels its SLURM jobs on SIGINT (on SIGTERM it waits for them)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def runs(smoke_repo, tmp_path_factory):
    """The SLURM run of config/smoke.yaml, beside the test session's local smoke run (``smoke_repo``)."""
    slurm = tmp_path_factory.mktemp("slurm") / "repo"
    slurm.mkdir()
    copy_repo(slurm)
    # --cores 2: Snakemake caps every job's threads (torch threads) at --cores, SLURM jobs included
    # (and, inside a job, at the node's CPUs). --workflow-profile none: as profiles/slurm/config.yaml
    # says. The other flags are for the test only: squeue for job states (no accounting here), a
    # status check 2 s after a job ends and every 2 s after that (defaults 40 s and 10 s), and the
    # logs of successful SLURM jobs kept for the checks below.
    # --set-threads: the model jobs with 1 thread, as in the local smoke run (rules/common.smk gives
    # them half the cores of a CPU-only machine there, and 8 on a cluster node, capped at --cores),
    # and toy_base with 2 (the local run gives it every core)
    threads = ["--set-threads", *sorted(f"{r}=1" for r in model_thread_rules()), "toy_base=2"]
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--workflow-profile", "none",
           "--cores", "2", *threads, *SMOKE, "--slurm-status-command", "squeue",
           "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
           "--slurm-keep-successful-logs"]
    env = _env(slurm, KD_SLURM_PARTITION=CPU_PARTITION, KD_SLURM_GPU_PARTITION=GPU_PARTITION,
               KD_SLURM_GPU_MODEL=GPU_MODEL, KD_SLURM_SITE=os.devnull)
    start = time.time()
    proc, out = _start(cmd, slurm, env)
    cancelled: dict = {}
    watcher = threading.Thread(target=_cancel_when_started, args=(slurm, proc, cancelled), daemon=True)
    watcher.start()
    try:
        proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the SLURM run still running after {RUN_TIMEOUT} s:\n{out.read_text()[-3000:]}") from None
    finally:
        _stop(proc)
    watcher.join(timeout=5)
    print(f"wall time of the SLURM run: {round(time.time() - start)} s; cancelled: {cancelled}")
    assert proc.returncode == 0, f"the SLURM run failed:\n{out.read_text()[-8000:]}"
    logs = sorted((slurm / ".snakemake" / "log").glob("*.snakemake.log"))
    assert logs, "no Snakemake log"
    return {"local": smoke_repo, "slurm": slurm, "log": without_job_logs(logs[-1].read_text()), "cancelled": cancelled,
            "jobs": _scontrol_jobs()}


def _submissions(log: str) -> dict[int, list[str]]:
    """Snakemake job id -> the SLURM job ids it was submitted as, in order."""
    subs: dict[int, list[str]] = {}
    for jobid, slurm_id in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log):
        subs.setdefault(int(jobid), []).append(slurm_id)
    return subs


def test_every_cluster_job_ran_as_a_slurm_job(runs):
    jobs = printed_jobs(runs["log"])
    subs = _submissions(runs["log"])
    cluster = {j["jobid"]: j for j in jobs if not j["local"]}
    local = {j["jobid"]: j for j in jobs if j["local"]}
    assert cluster and local
    assert set(subs) == set(cluster), "jobs submitted to SLURM != the non-local jobs"
    figures = {"figure_metrics", "figure_loss", "comparison_grid", "figure_dmkd", "paper", "pairwise_gather", "all"}
    assert figures <= {j["rule"] for j in local.values()}
    assert not figures & {j["rule"] for j in cluster.values()}
    held = runs["jobs"]
    gpu = gpu_rules(runs["slurm"] / "rules")
    slurm_logs = runs["slurm"] / ".snakemake" / "slurm_logs"
    for jobid, job in cluster.items():
        for slurm_id in subs[jobid]:
            assert slurm_id in held, f"SLURM job {slurm_id} ({job['rule']}) unknown to slurmctld"
            fields = held[slurm_id]
            assert fields["Comment"].split("_wildcards_")[0] == f"rule_{job['rule']}"
            assert list(slurm_logs.glob(f"rule_{job['rule']}/**/{slurm_id}.log")), f"no SLURM log of {slurm_id}"
            if job["rule"] in gpu:
                assert fields["Partition"] == GPU_PARTITION, (job["rule"], fields["Partition"])
                assert f"gpu:{GPU_MODEL}:1" in fields.get("TresPerJob", ""), (job["rule"], fields.get("TresPerJob"))
            else:
                assert fields["Partition"] == CPU_PARTITION, (job["rule"], fields["Partition"])
                assert "gpu" not in fields.get("TresPerJob", "") + fields.get("TresPerNode", ""), job["rule"]
        assert held[subs[jobid][-1]]["JobState"] == "COMPLETED", (job["rule"], held[subs[jobid][-1]]["JobState"])
    assert {j["rule"] for j in cluster.values()} & gpu, "no GPU job ran"


def test_cancelled_job_was_resubmitted_and_completed(runs):
    cancelled = runs["cancelled"]
    assert cancelled, f"no running job with comment {CANCEL_COMMENT} was found to cancel"
    assert runs["jobs"][cancelled["job_id"]]["JobState"] == "CANCELLED"
    subs = _submissions(runs["log"])
    (jobid,) = [j for j, ids in subs.items() if cancelled["job_id"] in ids]
    ids = subs[jobid]
    assert len(ids) == 2 and ids[0] == cancelled["job_id"], ids  # the cancelled attempt and one retry
    assert runs["jobs"][ids[1]]["JobState"] == "COMPLETED"
    assert f"SLURM-job '{cancelled['job_id']}' failed" in runs["log"]
    assert (runs["slurm"] / OUT / "images" / "teacher" / "train.parquet").is_file()


def _frame(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


# run-specific by design: a fingerprint of the model folder (file mtimes) and the seconds per image
MANIFEST_VOLATILE = ["settings_hash", "wall_time_s"]


def test_prompts_and_images_equal_the_local_run(runs):
    a, b = runs["local"] / OUT, runs["slurm"] / OUT
    for split in ("train", "eval", "filler"):
        pd.testing.assert_frame_equal(_frame(a / "prompts" / f"{split}.parquet"), _frame(b / "prompts" / f"{split}.parquet"))
    manifests = sorted(p.relative_to(a) for p in a.glob("images/*/[!.]*.parquet"))  # one per model and split
    manifests += sorted(p.relative_to(a) for p in a.glob("dmkd/synthetic/*/manifest.parquet"))
    # the teacher's 3 splits, base and LoRA eval + filler, 2 block-distilled and 2 width students; DM-KD's set
    assert len(manifests) == 12, manifests
    for rel in manifests:
        ma, mb = _frame(a / rel), _frame(b / rel)
        pd.testing.assert_frame_equal(ma.drop(columns=MANIFEST_VOLATILE), mb.drop(columns=MANIFEST_VOLATILE), obj=str(rel))
        for f in ma["file"]:
            pa, pb = (np.asarray(Image.open(root / rel.parent / f)) for root in (a, b))
            assert np.array_equal(pa, pb), (str(rel.parent), f)


def test_tables_equal_the_local_run(runs):
    """Metrics, training losses, the world's data: identical (CPU, same seeds and threads), timings aside."""
    a, b = runs["local"] / OUT, runs["slurm"] / OUT
    tables = sorted(p.relative_to(a) for d in ("metrics", "train", "data", "models", "dmkd")
                    for p in (a / d).rglob("*.parquet") if "synthetic" not in p.parts)
    assert len(tables) >= 30, tables
    for rel in tables:
        ta, tb = _frame(a / rel), _frame(b / rel)
        if rel == Path("metrics") / "efficiency.parquet":
            # latency, throughput and memory are measurements: only the parameter counts are exact
            timed = ~ta["metric"].str.startswith("params_")
            assert (ta["metric"] == tb["metric"]).all() and np.isfinite(tb.loc[timed, "value"]).all()
            ta.loc[timed, "value"] = tb.loc[timed, "value"] = 0.0
        if rel == Path("metrics") / "block_kd.parquet":  # its step-latency rows are measurements
            timed = ta["metric"].str.startswith("step_ms")
            values = ["mean", "ci_low", "ci_high"]
            assert (ta["metric"] == tb["metric"]).all() and timed.any() and np.isfinite(tb.loc[timed, values].to_numpy()).all()
            ta.loc[timed, values] = tb.loc[timed, values] = 0.0
        if rel.name in ("size_latency.parquet", "block_kd_latency.parquet"):  # times are measurements; FLOPs, parameters exact
            timed = ["step_ms", "ci_low", "ci_high", "ratio_teacher", "ratio_ci_low", "ratio_ci_high"]
            assert np.isfinite(tb[timed].to_numpy()).all() and (tb["step_ms"] > 0).all()
            ta, tb = ta.drop(columns=timed), tb.drop(columns=timed)
        if rel == Path("metrics") / "size_study.parquet":  # the size study's cost columns come from efficiency
            timed = ["latency_per_step_ms", "latency_per_image_ms", "peak_memory_mib", "fid_x_seconds", "on_frontier",
                     "step_ms", "step_ms_ci_low", "step_ms_ci_high", "step_ms_batch"]
            ta, tb = ta.drop(columns=timed), tb.drop(columns=timed)
        pd.testing.assert_frame_equal(ta, tb, obj=str(rel))
