"""GPU assignment for concurrent jobs on one machine.

Snakemake caps how many GPU jobs run at once (rules declare ``resources: gpu=N``; the profile
sets ``resources: gpu=<GPUs on this machine>``) but does not tell a job *which* GPUs it got, and
every job would otherwise pick ``cuda:0``. :func:`claim_devices` takes ``n`` free devices for the
calling process by holding an exclusive lock file per device (``fcntl.flock``: the operating system
drops it when the process ends, even when it is killed, so no stale claim survives a crash) and
sets ``CUDA_VISIBLE_DEVICES`` to them before CUDA is initialised.

The devices to share are, in order of precedence: ``KD_DEVICES`` (comma-separated ids, e.g. to
keep some GPUs free, or fake ids in tests), ``CUDA_VISIBLE_DEVICES`` of the launching shell, or
every GPU ``nvidia-smi -L`` lists. Under SLURM (``SLURM_JOB_ID`` set) the scheduler has already
given the job its own GPUs, and a process started by a distributed launcher (``LOCAL_RANK`` set)
inherits its parent's claim: both are left alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kd_core.errors import KDError

log = logging.getLogger("kd_core")


def visible_devices(env: dict[str, str] | None = None) -> list[str]:
    """The device ids jobs on this machine share (see the module docstring)."""
    env = os.environ if env is None else env
    for key in ("KD_DEVICES", "CUDA_VISIBLE_DEVICES"):
        if env.get(key, "").strip():
            return [d.strip() for d in env[key].split(",") if d.strip()]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def lock_dir() -> Path:
    """Node-local folder of the per-device lock files (``KD_DEVICE_LOCKS`` overrides)."""
    return Path(os.environ.get("KD_DEVICE_LOCKS") or Path(tempfile.gettempdir()) / f"kd_core-devices-{os.getuid()}")


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextmanager
def claim_devices(n: int, wait_s: float = 1.0, timeout_s: float | None = None) -> Iterator[list[str]]:
    """Hold ``n`` devices no other job holds, with ``CUDA_VISIBLE_DEVICES`` set to them, for the
    duration of the context; yields their ids ([] when ``n`` is 0, under SLURM or a launcher)."""
    if n <= 0 or os.environ.get("SLURM_JOB_ID") or os.environ.get("LOCAL_RANK"):
        yield []
        return
    devices = visible_devices()
    if not devices:  # a CPU machine: the job runs on what its config says (device: auto picks cpu)
        yield []
        return
    if n > len(devices):
        raise KDError(f"the job asks for {n} GPUs but this machine shares {len(devices)} ({','.join(devices)}); "
                      "lower the rule's gpu resource in the profile, or list more devices in KD_DEVICES")
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    held: dict[str, int] = {}
    start, warned = time.monotonic(), False
    try:
        while len(held) < n:
            for d in devices:
                if d not in held and len(held) < n and (fd := _try_lock(folder / f"device-{d}.lock")) is not None:
                    held[d] = fd
            if len(held) < n:
                for fd in held.values():  # never sit on a partial claim: two jobs could wait for each other
                    os.close(fd)
                held.clear()
                if timeout_s is not None and time.monotonic() - start > timeout_s:
                    raise KDError(f"no {n} free GPU(s) among {','.join(devices)} after {timeout_s:.0f} s; another "
                                  "process holds them (lock files in " + str(folder) + ")")
                if not warned:
                    log.info("waiting for %d free GPU(s) among %s", n, ",".join(devices))
                    warned = True
                time.sleep(wait_s)
        claimed = [d for d in devices if d in held]
        previous = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(claimed)
        log.info("using GPU(s) %s", ",".join(claimed))
        try:
            yield claimed
        finally:
            if previous is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = previous
    finally:
        for fd in held.values():
            os.close(fd)
