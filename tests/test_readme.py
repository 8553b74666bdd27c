"""The README's code map names every rule, its adapter and a kd_core function that exists."""

import importlib
import re

from .conftest import ROOT


def _code_map() -> list[tuple[str, list[str], str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Code map", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`"):
            rows.append((cells[0], re.findall(r"`(\w+)`", cells[1]), cells[2].strip("`"), cells[3].strip("`")))
    return rows


def test_every_rule_is_in_the_code_map_with_its_adapter():
    rows = _code_map()
    mapped = {(f, r, s) for f, rules, s, _ in rows for r in rules}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for m in re.finditer(r"^\s*rule (\w+):\n(.*?)(?=^\s*(?:use )?rule |\Z)", smk.read_text(), re.S | re.M):
            script = re.search(r'"\.\./workflow_scripts/(\w+\.py)"', m.group(2))
            if script:  # rules without a script (aggregates) have no adapter
                assert (smk.name, m.group(1), script.group(1)) in mapped, f"{smk.name}: rule {m.group(1)} is not in the code map"


def test_every_function_in_the_code_map_exists():
    for _, _, script, target in _code_map():
        assert (ROOT / "workflow_scripts" / script).is_file(), script
        path = target.split(" ")[0].rstrip(",").split("[")[0]
        module, _, name = path.rpartition(".")
        try:
            importlib.import_module(path)  # a module named as a whole
            continue
        except ImportError:
            pass
        assert hasattr(importlib.import_module(module), name), f"{target} (adapter {script}) does not exist"
        adapter = (ROOT / "workflow_scripts" / script).read_text()
        assert name in adapter, f"adapter {script} does not call {name}"
