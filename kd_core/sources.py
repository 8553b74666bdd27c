"""Model and dataset sources: hub ids, local paths, and models the workflow builds itself."""

from __future__ import annotations

import os
import re

from kd_core.digests import tree_digest
from kd_core.errors import KDError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Sources built by the workflow: name -> (rule family, output folder under results/<experiment>/models/)
BUILT = {"toy:teacher": "toy_teacher", "toy:student": "toy_student", "toy:teacher_xl": "toy_teacher_xl",
         "tiny:sd": "tiny_sd", "tiny:sdxl": "tiny_sdxl",
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
    """Identity of a model by content: for a local file or folder, the SHA-256 of every file's name
    and bytes (:func:`kd_core.digests.tree_digest`); else the hub id.

    Generation reuses an image, and a training run its checkpoints, only under the same fingerprint:
    retraining a model in place with new weights makes its images anew, while identical bytes
    rewritten (a re-exported model, a copied folder) keep them.
    """
    if source is None or not is_local(source):
        return source
    return tree_digest(local_path(source))
