"""envs/*.yaml (for --sdm conda) install what `make setup` installs: the lock."""

import re

import yaml


def test_conda_env_installs_the_lock(root):
    envs = sorted((root / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        files = [p.split(None, 1)[1] for p in pip if p.startswith("-r ")]
        assert files == ["../requirements/torch-cpu.txt", "../requirements/lock.txt"], env.name
        assert all((env.parent / f).is_file() for f in files)
        # nothing beside the lock (a floating requirement would undo it), but the project itself
        assert [p for p in pip if not p.startswith("-")] == [], env.name
        assert "-e .." in pip
        assert "python=3.11" in spec["dependencies"]


def test_every_rule_uses_a_pinned_env(root):
    for smk in (root / "rules").glob("*.smk"):
        text = smk.read_text()
        # rules that run something (script / shell / run), top-level or inside if/else (sharded rules);
        # a target-only rule (input, nothing to run) needs no environment
        bodies = re.split(r"^\s*rule \w+:", text, flags=re.MULTILINE)[1:]
        rules = [b for b in bodies if re.search(r"^\s+(script|shell|run|wrapper):", b, re.MULTILINE)]
        assert len(rules) == len(re.findall(r'conda:\n\s+"\.\./envs/kd_core\.yaml"', text)), smk.name
