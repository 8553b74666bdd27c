"""code_hash / script_hash: what a rule's rerun decision sees of the code it runs."""

import shutil
import subprocess
import sys

from kd_core.provenance import dependencies

from .conftest import ROOT

HASH = "from kd_core.provenance import code_hash; print(code_hash('kd_core.metrics.stats'))"


def _hash(pkg_root) -> str:
    out = subprocess.run([sys.executable, "-c", HASH], cwd=pkg_root, env={"PYTHONPATH": str(pkg_root)},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_dependencies_follow_kd_core_imports_transitively():
    files = {p.relative_to(ROOT).as_posix() for p in dependencies("kd_core.metrics.stats")}
    assert {"kd_core/metrics/stats.py", "kd_core/metrics/bootstrap.py", "kd_core/metrics/directions.py",
            "kd_core/io.py"} <= files
    assert "kd_core/world/render.py" not in files and "kd_core/generate.py" not in files
    grammars = {p.name for p in dependencies("kd_core.grammars")}  # a package counts with its data files
    assert {"__init__.py", "shapes.yaml"} <= grammars


def test_code_hash_changes_with_the_module_and_what_it_imports_only(tmp_path):
    shutil.copytree(ROOT / "kd_core", tmp_path / "kd_core", ignore=shutil.ignore_patterns("__pycache__"))
    base = _hash(tmp_path)
    assert len(base) == 16 and base == _hash(tmp_path)  # stable
    render = tmp_path / "kd_core" / "world" / "render.py"  # not imported by the stats module
    render.write_text(render.read_text() + "\n# an unrelated edit\n")
    assert _hash(tmp_path) == base
    bootstrap = tmp_path / "kd_core" / "metrics" / "bootstrap.py"  # imported by it
    bootstrap.write_text(bootstrap.read_text() + "\n# an edit of a dependency\n")
    after_dependency = _hash(tmp_path)
    assert after_dependency != base
    stats = tmp_path / "kd_core" / "metrics" / "stats.py"
    stats.write_text(stats.read_text() + "\n# an edit of the module itself\n")
    assert _hash(tmp_path) not in (base, after_dependency)


SCRIPT_HASH = "import sys; from kd_core.provenance import script_hash; print(script_hash(sys.argv[1]))"


def test_a_rule_s_code_hash_covers_its_adapter_and_what_it_imports(tmp_path):
    """script_hash of workflow_scripts/summary.py: its own text, and kd_core.metrics.stats (which it
    imports) with that module's imports, found by reading the imports; not an unrelated module."""
    shutil.copytree(ROOT / "kd_core", tmp_path / "kd_core", ignore=shutil.ignore_patterns("__pycache__"))
    adapter = tmp_path / "summary.py"
    shutil.copy(ROOT / "workflow_scripts" / "summary.py", adapter)

    def digest() -> str:
        return subprocess.run([sys.executable, "-c", SCRIPT_HASH, str(adapter)], cwd=tmp_path,
                              env={"PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, check=True).stdout.strip()

    seen = [digest()]
    render = tmp_path / "kd_core" / "world" / "render.py"
    render.write_text(render.read_text() + "\n# an unrelated edit\n")
    assert digest() == seen[0]
    for path in (tmp_path / "kd_core" / "metrics" / "bootstrap.py", adapter):  # a dependency of a dependency; the adapter
        path.write_text(path.read_text() + "\n# an edit\n")
        seen.append(digest())
        assert seen[-1] not in seen[:-1], path.name
