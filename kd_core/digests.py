"""Identity by content: SHA-256 of files and folders, each file hashed once.

A rewritten file with the same bytes keeps its digest, so a consumer keyed on it (generation's
reuse of images, a training run's checkpoints, a latent cache) does not start again; a file with
new bytes gets a new one. Digests are cached by (path, size, mtime, ctime, inode) in a small SQLite
file shared by every process of the machine (``$KD_CORE_CACHE`` or ``~/.cache/kd_core``), so a
multi-gigabyte model folder is read once, not at every job. The cache is only an accelerator: when
it cannot be opened the digest is computed afresh.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

_CHUNK = 1 << 20
_memo: dict[tuple, str] = {}


def cache_file() -> Path:
    root = os.environ.get("KD_CORE_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "kd_core")
    return Path(root).expanduser() / "digests.sqlite3"


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _db() -> sqlite3.Connection | None:
    try:
        path = cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=30)
        con.execute("CREATE TABLE IF NOT EXISTS digest (path TEXT PRIMARY KEY, stat TEXT, sha256 TEXT)")
        return con
    except (OSError, sqlite3.Error):
        return None


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digests(paths: list[str | os.PathLike]) -> list[str]:
    """SHA-256 (hex) of each file's bytes, from the cache where its stat is unchanged."""
    keys = [_stat_key(Path(p)) for p in paths]
    out: list[str | None] = [_memo.get(k) for k in keys]
    todo = [i for i, d in enumerate(out) if d is None]
    if not todo:
        return out  # type: ignore[return-value]
    con = _db()
    try:
        for i in todo:
            stat = repr(keys[i][1:])
            row = None
            if con is not None:
                try:
                    row = con.execute("SELECT sha256 FROM digest WHERE path = ? AND stat = ?", (keys[i][0], stat)).fetchone()
                except sqlite3.Error:
                    row = None
            digest = row[0] if row else _hash(Path(paths[i]))
            if not row and con is not None:
                try:
                    con.execute("INSERT OR REPLACE INTO digest VALUES (?, ?, ?)", (keys[i][0], stat, digest))
                except sqlite3.Error:
                    pass
            _memo[keys[i]] = out[i] = digest
        if con is not None:
            try:
                con.commit()
            except sqlite3.Error:
                pass
    finally:
        if con is not None:
            con.close()
    return out  # type: ignore[return-value]


def file_digest(path: str | os.PathLike) -> str:
    return file_digests([path])[0]


def tree_digest(root: str | os.PathLike) -> str:
    """SHA-256 (16 hex digits) of a file, or of a folder: every file's relative path and content digest.

    Names and bytes only: copying, touching or rewriting a folder with the same files keeps it.
    """
    root = Path(root)
    if not root.is_dir():
        return file_digest(root)[:16]
    files = sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p, d in zip(files, file_digests(files), strict=True):
        h.update(f"{p.relative_to(root).as_posix()}:{d}\n".encode())
    return h.hexdigest()[:16]
