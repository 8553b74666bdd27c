"""GPU assignment: concurrent jobs get distinct devices (fake device lists; no GPU needed)."""

import os
import subprocess
import sys
import textwrap

import pytest

from kd_core.devices import claim_devices, visible_devices
from kd_core.errors import KDError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_DEVICES", "0,1")
    monkeypatch.setenv("KD_DEVICE_LOCKS", str(tmp_path / "locks"))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tmp_path


def test_device_list_precedence():
    assert visible_devices({"KD_DEVICES": "2, 3", "CUDA_VISIBLE_DEVICES": "0"}) == ["2", "3"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}) == ["GPU-aa", "GPU-bb"]


def test_claims_are_exclusive_and_released(fake_gpus):
    with claim_devices(1) as a:
        assert a == ["0"] and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        with claim_devices(1) as b:  # a second job on the machine gets the other device
            assert b == ["1"] and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
            with pytest.raises(KDError, match="no 1 free GPU"):
                with claim_devices(1, wait_s=0.05, timeout_s=0.2):
                    pass
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with claim_devices(2) as both:
        assert both == ["0", "1"]
    with pytest.raises(KDError, match="asks for 3 GPUs but this machine shares 2"):
        with claim_devices(3):
            pass


def test_no_claim_under_slurm_or_without_gpus(fake_gpus, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    with claim_devices(1) as got:
        assert got == [] and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv("KD_DEVICES", "")
    monkeypatch.setenv("PATH", str(fake_gpus))  # no nvidia-smi: a CPU machine
    with claim_devices(1) as got:
        assert got == []


def test_a_killed_job_frees_its_device(fake_gpus):
    holder = subprocess.Popen([sys.executable, "-c", "from kd_core.devices import claim_devices\nimport time\n"
                               "with claim_devices(1) as d:\n    print(d[0], flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    assert holder.stdout.readline().strip() == "0"
    with claim_devices(1) as d:
        assert d == ["1"]
    holder.kill()
    holder.wait()
    with claim_devices(2) as d:  # the OS dropped the killed process's lock
        assert d == ["0", "1"]


SNAKEFILE = textwrap.dedent('''
    rule all:
        input: expand("out/{i}.txt", i=range(4))

    rule gpu_job:
        output: "out/{i}.txt"
        log: "logs/{i}.log"
        threads: 1
        resources: gpu=1
        script: "job.py"
''')
# Each job, once it holds a device, waits until another job holds one too (or every other job is
# done), so that two jobs overlap however long a job takes to start: no timing assumption.
JOB = textwrap.dedent('''
    import os, time
    from kd_core.runlog import job
    with job(snakemake.log[0], snakemake.threads, gpus=snakemake.resources.gpu):
        me = snakemake.wildcards.i
        start = time.time()
        os.makedirs("holding", exist_ok=True)
        os.makedirs("done", exist_ok=True)
        open(f"holding/{me}", "w").close()
        deadline = time.time() + 120
        while time.time() < deadline and not (set(os.listdir("holding")) - {me}) and len(os.listdir("done")) < 3:
            time.sleep(0.05)
        time.sleep(0.3)  # still holding while the other job looks
        os.remove(f"holding/{me}")
        open(f"done/{me}", "w").close()
        with open(snakemake.output[0], "w") as f:
            f.write(f"{os.environ['CUDA_VISIBLE_DEVICES']} {start} {time.time()}")
''')


def test_concurrent_snakemake_gpu_jobs_run_on_distinct_devices(fake_gpus):
    """Four gpu=1 jobs, two devices, --resources gpu=2: jobs that overlap in time hold different devices."""
    wf = fake_gpus / "wf"
    wf.mkdir()
    (wf / "Snakefile").write_text(SNAKEFILE)
    (wf / "job.py").write_text(JOB)
    env = {**os.environ, "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", "4", "--resources", "gpu=2", "--quiet"], cwd=wf,
                   env=env, check=True, capture_output=True)
    runs = []
    for i in range(4):
        dev, start, end = (wf / "out" / f"{i}.txt").read_text().split()
        runs.append((dev, float(start), float(end)))
    assert {d for d, _, _ in runs} == {"0", "1"}
    overlapping = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:] if a[1] < b[2] and b[1] < a[2]]
    assert overlapping, "the two-GPU cap should have run jobs side by side"
    assert all(a[0] != b[0] for a, b in overlapping)
    assert "using GPU(s)" in (wf / "logs" / "0.log").read_text()
