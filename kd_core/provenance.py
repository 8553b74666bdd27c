"""Code hashes for rerun decisions and provenance for Parquet metadata.

Snakemake reruns a job when its params change but cannot see edits inside an imported package;
each rule therefore puts :func:`script_hash` of its adapter into its params: the adapter's own
source and that of every ``kd_core`` module it imports, transitively, found by reading the imports
(nothing listed by hand, so a module an adapter starts to use counts at once).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import platform
from functools import cache
from pathlib import Path

PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "peft", "numpy", "pandas", "pyarrow")


def _files(module: str) -> list[Path]:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"no such module {module!r}")
    origin = Path(spec.origin)
    if spec.submodule_search_locations is not None:  # a package: its __init__ and data files
        folder = Path(next(iter(spec.submodule_search_locations)))
        data = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".json"))
        init = [folder / "__init__.py"] if (folder / "__init__.py").exists() else []
        return init + data
    return [origin]


@cache
def _kd_imports(path: Path) -> frozenset[str]:
    """``kd_core`` modules imported by a source file (``from kd_core.x import y`` may name a submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kd_core.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kd_core"):
            found.add(node.module)
            spec = importlib.util.find_spec(node.module)
            if spec is not None and spec.submodule_search_locations:  # a package: names may be submodules
                found |= {f"{node.module}.{a.name}" for a in node.names
                          if importlib.util.find_spec(f"{node.module}.{a.name}") is not None}
    return frozenset(found)


def dependencies(*modules: str) -> list[Path]:
    """Source files of ``modules`` and of every ``kd_core`` module they import, transitively."""
    seen: set[str] = set()
    files: set[Path] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for path in _files(module):
            files.add(path)
            if path.suffix == ".py":
                todo += sorted(_kd_imports(path) - seen)
    return sorted(files)


def _source_hash(h, modules: list[str]) -> str:
    """``h`` updated with each kd_core file of ``modules`` and their imports (path and bytes): 16 hex digits."""
    root = Path(importlib.util.find_spec("kd_core").origin).parent
    for path in dependencies(*modules):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def script_hash(script: str | Path) -> str:
    """SHA-256 (16 hex digits) over a script (a workflow adapter) and every ``kd_core`` module it
    imports, transitively: the code hash of the rule that runs it."""
    path = Path(script)
    return _source_hash(hashlib.sha256(path.read_bytes()), sorted(_kd_imports(path)))


def code_hash(*modules: str) -> str:
    """SHA-256 (16 hex digits) over the source of ``modules`` and the ``kd_core`` code they import.

    A package (e.g. ``kd_core.grammars``) counts with all its files, data included.
    """
    return _source_hash(hashlib.sha256(), list(modules))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out
