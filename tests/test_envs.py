"""envs/*.yaml (for --sdm conda) must pin what pyproject.toml pins."""

import re
import tomllib

import yaml


def test_conda_env_pins_agree_with_pyproject(root):
    deps = set(tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"])
    envs = sorted((root / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        pinned = {p for p in pip if not p.startswith("-")}
        assert pinned == deps, f"{env.name}: only in env {pinned - deps}, only in pyproject {deps - pinned}"
        assert "python=3.11" in spec["dependencies"]


def test_every_rule_uses_a_pinned_env(root):
    for smk in (root / "rules").glob("*.smk"):
        text = smk.read_text()
        # rules that run something (script / shell / run), top-level or inside if/else (sharded rules);
        # a target-only rule (input, nothing to run) needs no environment
        bodies = re.split(r"^\s*rule \w+:", text, flags=re.MULTILINE)[1:]
        rules = [b for b in bodies if re.search(r"^\s+(script|shell|run|wrapper):", b, re.MULTILINE)]
        assert len(rules) == len(re.findall(r'conda:\n\s+"\.\./envs/kd_core\.yaml"', text)), smk.name
