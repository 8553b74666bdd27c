"""The locked install (scripts/lock.py, requirements/): make setup installs exactly the lock, the
lock admits pyproject's bounds, and a wheelhouse installs with no network (slow)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _lock_module():
    spec = importlib.util.spec_from_file_location("kd_lock", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _lock_module()


def test_this_environment_is_the_lock():
    """What `make setup` installed (the environment the tests run in) is the lock, package by package."""
    build = lock.torch_build()
    assert build in ("cpu", "cuda"), f"torch {lock.installed().get('torch')} is neither locked build"
    assert lock.differences(build) == []
    out = subprocess.run([sys.executable, str(ROOT / "scripts/lock.py"), "check", "--torch", build],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "as locked" in out.stdout


def test_check_names_each_difference(tmp_path, monkeypatch):
    pins = (ROOT / "requirements/lock.txt").read_text().splitlines()
    numpy = next(i for i, line in enumerate(pins) if line.startswith("numpy=="))
    pins[numpy] = "numpy==0.0.1"
    tqdm = next(i for i, line in enumerate(pins) if line.startswith("tqdm=="))
    del pins[tqdm]
    pins.append("not-a-package==1.0")
    doctored = tmp_path / "lock.txt"
    doctored.write_text("\n".join(pins) + "\n")
    monkeypatch.setattr(lock, "LOCK", doctored)
    problems = lock.differences(lock.torch_build())
    have = lock.installed()
    assert problems == ["not-a-package==1.0 is not installed",
                        f"numpy is {have['numpy'][1]}, the lock says 0.0.1",
                        f"tqdm=={have['tqdm'][1]} is installed but not in the lock"]


def test_unpinned_line_is_refused(tmp_path):
    bad = tmp_path / "lock.txt"
    bad.write_text("numpy>=2\n")
    with pytest.raises(SystemExit, match=r"lock.txt:1: 'numpy>=2' is not pinned as name==version"):
        lock.read_pins(bad)


def test_lock_admits_pyproject_bounds():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock.expected("cpu")
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(spec)
        key = lock.canonical(req.name)
        assert key in pins, f"{req.name} is a dependency but not in the lock"
        version = pins[key][1]
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} is outside {req.specifier}"
    cuda = lock.read_pins(lock.TORCH_FILES["cuda"])
    assert cuda["torch"][1] == pins["torch"][1].split("+")[0], "the CPU and CUDA files lock one torch version"
    assert not set(cuda) & set(lock.read_pins(lock.LOCK)), "a package locked twice"


@pytest.mark.slow
def test_wheelhouse_installs_offline(tmp_path):
    """make wheelhouse, then make setup from it alone (no index, no find-links, no proxy) in a copy
    of the checkout; there `make check` and a dry run of the smoke config work."""
    repo = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    house = tmp_path / "wheelhouse"
    # TORCH_PAGE empty: torch from where pip looks here (this machine cannot reach PyTorch's page)
    subprocess.run(["make", "-C", str(repo), "wheelhouse", f"WHEELHOUSE={house}", f"PYTHON={sys.executable}", "TORCH_PAGE="],
                   check=True, capture_output=True, text=True)
    assert any(p.name.startswith("torch-") for p in house.iterdir())
    # the offline host: pip sees the wheelhouse only, and any connection fails at once
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and "proxy" not in k.lower()}
    env |= {"PIP_CONFIG_FILE": os.devnull, "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
            "HF_HUB_OFFLINE": "1", "PIP_RETRIES": "0"}
    python = shutil.which("python3.11") or sys.base_prefix + "/bin/python3"
    venv = tmp_path / "venv"
    out = subprocess.run(["make", "-C", str(repo), "setup", f"WHEELHOUSE={house}", f"VENV={venv}", f"PYTHON={python}"],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "as locked" in out.stdout
    for target, says in ((["check"], "config ok"), (["demo", "SNAKEMAKE_ARGS=-n"], "This was a dry-run")):
        out = subprocess.run(["make", "-C", str(repo), *target, f"VENV={venv}", "CONFIG=config/smoke.yaml"],
                             env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert says in out.stdout + out.stderr
