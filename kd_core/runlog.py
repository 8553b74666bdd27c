"""Running one workflow job: log file, thread count, and one-line errors for user mistakes.

The job's threads (Snakemake's ``threads``) bound every thread pool the job may start: OpenMP,
BLAS and torch's intra-op pool (set at once when torch is already imported, else through the
environment it reads on import), and OpenCV's. This module does not import torch itself, so that a
job that needs none (figures, tables, the paper) starts in about a second.

Progress bars and messages go both to the terminal and to the job's log file. A
:class:`~kd_core.errors.KDError` (bad input) ends the job with one line and no traceback; any
other exception is a bug and keeps its traceback (in the log too). A write that fails for want of
room (disk full, quota, file size limit) is one line too: outputs are written to temporary files
and renamed into place (:mod:`kd_core.io`), so nothing half-written is left.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import resource
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from kd_core.devices import claim_devices
from kd_core.errors import KDError

#: A write that failed for want of room: no space left, quota exceeded, file size limit.
WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
LAUNCHED = "KD_LAUNCHED"  # set in the processes kd_core.launch starts
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def set_threads(threads: int | None) -> None:
    """Use the threads Snakemake gave the job (``OMP_NUM_THREADS`` otherwise) in every thread pool."""
    n = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n <= 0:
        return
    for var in _THREAD_VARS:
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(n)


class _Tee:
    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
            st.flush()
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()

    def isatty(self) -> bool:
        return self.streams[0].isatty()


@contextlib.contextmanager
def job(log_path: str | Path | None, threads: int | None = None, name: str = "kd_core",
        gpus: int = 0) -> Iterator[logging.Logger]:
    """Context of one job: tee stderr to ``log_path``, set torch threads, hold ``gpus`` devices
    (:func:`kd_core.devices.claim_devices`), turn KDError into one line.

    In a process started by :func:`kd_core.launch.launch_processes` the parent already writes the
    log and holds the devices: the child only reports errors.
    """
    set_threads(threads)
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    launched = bool(os.environ.get(LAUNCHED))
    fh = None if log_path is None or launched else _open_log(log_path)
    old = sys.stderr
    handler = None
    if fh is not None:
        sys.stderr = _Tee(old, fh)
    if log_path is not None:  # a launched process logs to its stderr, which its parent writes to the log
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    try:
        with claim_devices(gpus):  # steps aside in a launched rank (LOCAL_RANK): the parent holds them
            yield logger
    except KDError as exc:
        _say(f"error: {exc}")
        raise SystemExit(1) from None
    except Exception as exc:
        problem = write_failure(exc)
        if problem is None:
            if fh is not None:
                traceback.print_exc(file=fh)
            raise
        _say(f"error: {problem}; free space (or raise the quota) and rerun: every output is written to a "
             "temporary file first, so nothing half-written was kept")
        raise SystemExit(1) from None
    except BaseException:
        if fh is not None:
            traceback.print_exc(file=fh)
        raise
    finally:
        _leave_process_group()
        if fh is not None:  # the job's own resources, for bench/stages.py (Snakemake's benchmark
            fh.write(resources_line() + "\n")  # samples CPU time only every 30 s after the first 15)
        if handler is not None:
            logger.removeHandler(handler)
        sys.stderr = old
        if fh is not None:
            fh.close()


def _say(line: str) -> None:
    """``line`` on stderr, on a line of its own: open progress bars are closed first."""
    bars = getattr(sys.modules.get("tqdm"), "tqdm", None)
    for bar in list(getattr(bars, "_instances", ())):
        bar.close()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def write_failure(exc: BaseException) -> str | None:
    """What failed, when ``exc`` says a write failed for want of room; None for any other exception.

    Python, pyarrow and PIL raise OSError with its errno; safetensors (Rust) names the OS error in
    its message; torch.save's zip writer only reports that the file came out short."""
    if isinstance(exc, OSError) and exc.errno in WRITE_FAILURES:
        return f"{exc.strerror or os.strerror(exc.errno)}" + (f" writing {exc.filename}" if exc.filename else "")
    text = str(exc)
    code = re.search(r"os error (\d+)", text)
    if code and int(code.group(1)) in WRITE_FAILURES:
        return f"{os.strerror(int(code.group(1)))} ({type(exc).__name__})"
    if "inline_container.cc" in text and "unexpected pos" in text:
        return "torch.save wrote a short file (disk full or a file size limit)"
    return None


def _leave_process_group() -> None:
    """Destroy torch.distributed's process group, if the job made one, before the interpreter exits:
    left to exit, gloo's threads were seen to abort a rank now and then ("terminate called without an
    active exception", exit -6), failing a job whose work was done."""
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


#: The last line of a job's log: its CPU time (user + system, child processes included) and peak
#: resident memory, as ``getrusage`` reports them when the job ends.
RESOURCES = "job resources:"


def resources_line() -> str:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    rss_mb = max(own.ru_maxrss, children.ru_maxrss) / 1024  # KiB on Linux
    return f"{RESOURCES} cpu_s={cpu:.2f} max_rss_mb={rss_mb:.1f}"


def _open_log(log_path: str | Path) -> TextIO:
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    return open(log_path, "w")  # noqa: SIM115 - closed by job()
