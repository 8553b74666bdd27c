"""Multi-process training inside one job: the script again under accelerate launch (CPU, gloo here)."""

import os
import subprocess
import sys
import textwrap

import pytest

from kd_core.launch import launch_command, launch_processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path
    import torch
    from accelerate import Accelerator
    from kd_core.launch import launch_processes
    from kd_core.runlog import job

    out, n = Path(sys.argv[1]), int(sys.argv[2])
    with job(out / "job.log", 1) as log:
        if not launch_processes(__file__, n):
            acc = Accelerator(cpu=not torch.cuda.is_available())
            total = acc.reduce(torch.tensor([float(acc.process_index + 1)]), reduction="sum").item()
            (out / f"rank{acc.process_index}.txt").write_text(f"{acc.num_processes} {total}")
            log.info("rank %d of %d", acc.process_index, acc.num_processes)
''')


@pytest.mark.parametrize("n", [1, 2])
def test_script_runs_in_n_processes_and_its_output_reaches_the_log(tmp_path, n):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    # sys.argv of the relaunched processes: accelerate passes the script's own arguments on
    launch = subprocess.run([sys.executable, str(script), str(tmp_path), str(n)], env={**os.environ, "PYTHONPATH": ROOT},
                            capture_output=True, text=True, timeout=300)
    assert launch.returncode == 0, launch.stderr[-3000:]
    ranks = sorted(p.name for p in tmp_path.glob("rank*.txt"))
    assert ranks == [f"rank{i}.txt" for i in range(n)]
    expected_sum = n * (n + 1) / 2  # all-reduce over the ranks: they form one process group
    assert all((tmp_path / r).read_text() == f"{n} {expected_sum}" for r in ranks)
    log = (tmp_path / "job.log").read_text()
    assert all(f"rank {i} of {n}" in log for i in range(n))


def test_one_process_needs_no_launcher(monkeypatch):
    assert launch_processes("whatever.py", 1) is False
    monkeypatch.setenv("LOCAL_RANK", "0")  # already a launched rank
    assert launch_processes("whatever.py", 4) is False
    cmd = launch_command("s.py", 4, port=29999)
    assert cmd[-1] == "s.py" and cmd[cmd.index("--num_processes") + 1] == "4" and "--multi_gpu" in cmd
