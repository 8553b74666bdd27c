"""Model and dataset sources: hub ids, local paths, and models the workflow builds itself."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from kd_core.errors import KDError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Sources built by the workflow: name -> (rule family, output folder under results/<experiment>/models/)
BUILT = {"toy:teacher": "toy_teacher", "toy:student": "toy_student", "tiny:sd": "tiny_sd", "tiny:sdxl": "tiny_sdxl",
         "tiny:clip": "tiny_clip", "ddpm:teacher": "ddpm_teacher"}


def is_built(source: str) -> bool:
    return source in BUILT


def is_local(source: str) -> bool:
    """A local path exists or is written like one (``/``, ``./``, ``../``, ``~``); else a hub id."""
    if is_built(source):
        return False
    expanded = os.path.expanduser(source)
    return os.path.exists(expanded) or source.startswith(("/", "./", "../", "~")) or not HUB_ID.match(source)


def check_source(source: str, key: str) -> None:
    """One-line error when ``source`` is neither a built model, an existing path nor a hub id."""
    if source.startswith(("toy:", "tiny:", "ddpm:")) and not is_built(source):
        raise KDError(f"config key '{key}' is {source!r}; built models are: {', '.join(BUILT)}")
    if is_local(source) and not os.path.exists(os.path.expanduser(source)):
        raise KDError(f"config key '{key}': local path {source!r} does not exist "
                      "(give an existing folder, or a hub id like 'org/name' in the Hugging Face cache)")


def local_path(source: str) -> str:
    return os.path.expanduser(source) if is_local(source) else source


def fingerprint(source: str | None) -> str | None:
    """Cheap identity of a model: for a local folder, every file's name, size and mtime; else the id.

    Generation reuses an image only under the same fingerprint, so retraining a model in place
    (same folder, new weights) makes its images anew.
    """
    if source is None or not is_local(source):
        return source
    root = Path(local_path(source))
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root) if root.is_dir() else p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
