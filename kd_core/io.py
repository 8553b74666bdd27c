"""Atomic file writes and schema-checked Parquet tables with provenance metadata.

Every file the workflow produces is written to a temporary sibling and renamed into place, so an
interrupted job never leaves a half-written output behind; the temporary siblings a killed job
leaves (SIGKILL runs no cleanup) are removed when its rerun writes the same output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())


def _owner() -> str:
    """``<pid>@<host>``: who writes a temporary file, in its name (see :func:`_remove_stale`)."""
    return f"{os.getpid()}@{_host()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_stale(path: Path) -> None:
    """Temporary siblings of ``path`` left by a writer that was killed (SIGKILL runs no cleanup): those
    of a process of this host that no longer runs. A live writer's (another rank of the same job) and
    another host's are left alone."""
    host, prefix = _host(), f".{path.name}."
    with os.scandir(path.parent) as entries:  # a prefix test, not a glob: cheap in a folder of many files
        stale = [Path(e.path) for e in entries if e.name.startswith(prefix)]
    for p in stale:
        owner = re.match(r"(\d+)@([A-Za-z0-9-]+)\.", p.name[len(prefix):])
        if owner and (owner[2] != host or _alive(int(owner[1]))):
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success. Temporary
    files of an earlier, killed write of ``path`` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_owner()}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` (a whole folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{_owner()}."))
    try:
        yield tmp
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)
        for p in tmp.rglob("*"):
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def load_rgb(path: str | os.PathLike, size: tuple[int, int] | None = None):
    """An image file as a uint8 RGB array (H, W, 3), resized (bicubic) to ``size`` = (width, height) if given."""
    import numpy as np

    im = Image.open(path).convert("RGB")
    if size is not None and im.size != size:
        im = im.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(im)


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")


def canonical_safetensors_header(path: str | os.PathLike) -> None:
    """Rewrite a safetensors file's header with its metadata keys sorted (in place, same tensors).

    The safetensors writer keeps the metadata in a hash map whose order changes from process to
    process, so the same tensors and metadata could make different bytes; a consumer keyed on the
    file's content (:mod:`kd_core.digests`) would then start again for nothing."""
    path = Path(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}) | header
    raw = json.dumps(ordered, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data start stays 8-byte aligned, as the writer keeps it
    with atomic_path(path) as tmp:
        tmp.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


def check_schema(df: pd.DataFrame, schema: pa.Schema, name: str) -> pa.Table:
    """Convert ``df`` to an Arrow table with ``schema``'s columns (extra columns kept, after them).

    Raises ``ValueError`` naming the table and column when a required column is missing or cannot
    be cast to its declared type.
    """
    missing = [f.name for f in schema if f.name not in df.columns]
    if missing:
        raise ValueError(f"table {name!r} lacks required column(s) {missing}")
    extra = [c for c in df.columns if c not in schema.names]
    table = pa.Table.from_pandas(df[schema.names + extra], preserve_index=False)
    fields = list(schema) + [table.schema.field(c) for c in extra]
    try:
        table = table.cast(pa.schema(fields))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"table {name!r} does not match its schema: {exc}") from exc
    return table


def write_parquet(
    df: pd.DataFrame,
    path: str | os.PathLike,
    schema: pa.Schema,
    name: str,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write ``df`` atomically as Parquet after checking it against ``schema``.

    ``metadata`` (provenance: config hash, seeds, versions, model ids, ...) is stored as JSON in
    the file's key-value metadata under ``kd_core``; read it back with :func:`read_metadata`.
    """
    table = check_schema(df, schema, name)
    meta = dict(table.schema.metadata or {})
    meta.pop(b"pandas", None)
    meta[b"kd_core"] = json.dumps({"table": name, **(metadata or {})}, default=str).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(b"kd_core", b"{}"))
