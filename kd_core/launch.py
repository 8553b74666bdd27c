"""Multi-GPU training inside one workflow job: the job's script again in N processes.

A training rule asks for ``resources: gpu=N``. With N > 1 its script calls
:func:`launch_processes`, which runs the same script file under ``accelerate launch`` with N
processes (one per GPU the job holds; ``CUDA_VISIBLE_DEVICES`` is inherited) and streams their
output into the job's log; each process then trains as one rank of a DDP run (the shared trainer
in :mod:`kd_core.train.loop` is accelerate-based). With one GPU or none the script trains in its
own process, unchanged. On a machine without CUDA the processes use the gloo backend (tests).

    with job(log, threads, gpus=n) as log:
        if not launch_processes(__file__, n):
            train(...)          # this process is the single worker, or one of the N ranks
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from kd_core.errors import KDError
from kd_core.runlog import LAUNCHED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(script: str | Path, n_processes: int, port: int | None = None, args: list[str] | None = None) -> list[str]:
    """The ``accelerate launch`` command line that runs ``script`` (with ``args``) in ``n_processes`` processes."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
            "--num_processes", str(n_processes), "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port or _free_port()), str(script), *(args or [])]


def launch_processes(script: str | Path, n_processes: int) -> bool:
    """Run ``script`` in ``n_processes`` processes and wait; ``True`` when it did (the caller has
    nothing left to do), ``False`` when this process should do the work itself (one process, or
    it is already one of the launched ranks)."""
    if n_processes <= 1 or os.environ.get(LAUNCHED) or os.environ.get("LOCAL_RANK"):
        return False
    env = {**os.environ, LAUNCHED: "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or "1"}
    sys.stderr.write(f"launching {n_processes} training processes (accelerate launch)\n")
    proc = subprocess.Popen(launch_command(script, n_processes, args=sys.argv[1:]), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stderr.write(line)
    if proc.wait() != 0:
        raise KDError(f"{n_processes} training processes of {Path(script).name} failed (exit code {proc.returncode}); "
                      "their output is above and in the job's log")
    return True
