"""Running one workflow job: log file, thread count, and one-line errors for user mistakes.

Progress bars and messages go both to the terminal and to the job's log file. A
:class:`~kd_core.errors.KDError` (bad input) ends the job with one line and no traceback; any
other exception is a bug and keeps its traceback (in the log too).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from kd_core.errors import KDError
from kd_core.seeding import set_threads


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
def job(log_path: str | Path | None, threads: int | None = None, name: str = "kd_core") -> Iterator[logging.Logger]:
    """Context of one job: tee stderr to ``log_path``, set torch threads, turn KDError into one line."""
    set_threads(threads)
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    if log_path is None:
        yield logger
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as fh:
        old = sys.stderr
        sys.stderr = _Tee(old, fh)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        try:
            yield logger
        except KDError as exc:
            sys.stderr.write(f"error: {exc}\n")
            sys.stderr.flush()
            raise SystemExit(1) from None
        except BaseException:
            traceback.print_exc(file=fh)
            raise
        finally:
            logger.removeHandler(handler)
            sys.stderr = old
