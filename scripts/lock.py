#!/usr/bin/env python3
"""The locked install: resolve the lock, check an environment against it, fill a wheelhouse.

    python scripts/lock.py resolve                    # make lock: requirements/*.txt from pyproject's bounds
    python scripts/lock.py check --torch cpu          # make setup: the running environment is the lock, or exit 1
    python scripts/lock.py wheelhouse DIR --torch cpu [--python-version 3.11 --platform manylinux_2_28_x86_64]

requirements/lock.txt holds every package but torch (one exact version each, kd_core's build backend
included); requirements/torch-cpu.txt and torch-cuda.txt hold torch and what only its build needs
(the CUDA libraries of PyPI's Linux wheel). Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQ = ROOT / "requirements"
LOCK = REQ / "lock.txt"
TORCH_FILES = {"cpu": REQ / "torch-cpu.txt", "cuda": REQ / "torch-cuda.txt"}
#: PyTorch's page of torch builds, CPU ones (``torch==X+cpu``) among them (PyPI's Linux wheels are CUDA
#: builds). A --find-links page is fetched once per package pip looks up: only torch is looked up there.
CPU_INDEX = "https://download.pytorch.org/whl/torch/"
#: Never locked: the installer itself and the project (installed from the checkout).
UNLOCKED = {"pip", "kd-core"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def canonical(name: str) -> str:
    """PEP 503 name: case and runs of -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, tuple[str, str]]:
    """``canonical name -> (name, version)`` of every ``name==version`` line of a requirements file."""
    pins = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = PIN.match(line)
        if m is None:
            raise SystemExit(f"{path}:{n}: '{line}' is not pinned as name==version")
        pins[canonical(m[1])] = (m[1], m[2])
    return pins


def expected(torch: str) -> dict[str, tuple[str, str]]:
    pins = read_pins(LOCK)
    if torch != "none":
        pins |= read_pins(TORCH_FILES[torch])
    return pins


def installed() -> dict[str, tuple[str, str]]:
    """``canonical name -> (name, version)`` of the distributions the running interpreter sees."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), (name, dist.version))
    return found


def torch_build() -> str:
    """Which torch file the installed torch is (cpu / cuda), or none when it is neither."""
    version = installed().get("torch", ("torch", None))[1]
    for build, path in TORCH_FILES.items():
        if read_pins(path).get("torch", (None, None))[1] == version:
            return build
    return "none"


def differences(torch: str) -> list[str]:
    """What the running environment has other than the lock (empty: it is the lock)."""
    want, have = expected(torch), installed()
    problems = []
    for key, (name, version) in sorted(want.items()):
        if key not in have:
            problems.append(f"{name}=={version} is not installed")
        elif have[key][1] != version:
            problems.append(f"{name} is {have[key][1]}, the lock says {version}")
    if torch == "none":
        if "torch" not in have:
            problems.append("torch is not installed (TORCH_BUILD=none keeps the torch already in the environment)")
        # what that torch brought (CUDA libraries, triton) is the user's choice, not the lock's
        allowed = set(want) | UNLOCKED | {"torch", "triton"}
        extra = [k for k in have if k not in allowed and not k.startswith(("nvidia-", "cuda-"))]
    else:
        extra = [k for k in have if k not in want and k not in UNLOCKED]
    problems += [f"{have[k][0]}=={have[k][1]} is installed but not in the lock" for k in sorted(extra)]
    return problems


def cmd_check(args) -> int:
    problems = differences(args.torch)
    if problems:
        sys.stderr.write(f"environment {sys.prefix} differs from {LOCK.relative_to(ROOT)}"
                         f"{'' if args.torch == 'none' else ' + ' + str(TORCH_FILES[args.torch].relative_to(ROOT))}: "
                         + "; ".join(problems) + " (make setup installs the lock; make lock refreshes it)\n")
        return 1
    print(f"environment {sys.prefix}: {len(expected(args.torch))} packages, as locked")
    return 0


def _pip(*args: str, python: str = sys.executable, env: dict | None = None) -> None:
    subprocess.run([python, "-m", "pip", *args], check=True, env=env)


def _report(requirements: list[str], env: dict | None = None) -> dict[str, tuple[str, str]]:
    """What pip would install for ``requirements`` into an empty environment (nothing is installed)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        _pip("install", "--dry-run", "--ignore-installed", "--quiet", "--disable-pip-version-check",
             "--report", str(report), *requirements, env=env)
        items = json.loads(report.read_text())["install"]
    return {canonical(i["metadata"]["name"]): (i["metadata"]["name"], i["metadata"]["version"]) for i in items}


def _write(path: Path, header: str, pins: dict[str, tuple[str, str]], lines: tuple[str, ...] = ()) -> None:
    body = "".join(f"{line}\n" for line in lines) + "".join(f"{n}=={v}\n" for _, (n, v) in sorted(pins.items()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + body)
    tmp.replace(path)
    print(f"wrote {path.relative_to(ROOT)}: {len(pins)} packages")


def cmd_resolve(args) -> int:
    """Resolve pyproject's bounds afresh (the newest versions they admit) with torch ``args.torch_version``."""
    version = args.torch_version
    stamp = (f"# Written by `make lock` (scripts/lock.py resolve) with Python {sys.version_info.major}."
             f"{sys.version_info.minor} on {sys.platform}; edit pyproject.toml's bounds, then make lock.\n")
    # torch==X+cpu from where pip looks already (a find-links folder, or PIP_FIND_LINKS=CPU_INDEX): as an
    # option here, the CPU page would be fetched again for every package of the resolution
    cpu = _report(["-e", f"{ROOT}[dev]", "setuptools>=68", f"torch=={version}+cpu"])
    # PyPI's Linux wheel of torch and the CUDA libraries its metadata pins: resolved from PyPI alone, so
    # that no CPU build found through a local index or find-links stands in for it
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    cuda = _report([f"torch=={version}"], env=env)
    lock = {k: v for k, v in cpu.items() if k not in UNLOCKED | {"torch"}}
    clash = {k: (lock[k][1], v[1]) for k, v in cuda.items() if k in lock and lock[k][1] != v[1]}
    if clash:
        raise SystemExit(f"torch=={version}'s CUDA build asks other versions than the lock: {clash}")
    _write(LOCK, "# Every package kd_core installs but torch, at one exact version (requirements/torch-*.txt: torch).\n"
           + stamp, lock)
    _write(TORCH_FILES["cpu"], "# torch, CPU build (make setup TORCH_BUILD=cpu, the default), from PyTorch's page of "
           "builds (the Makefile's TORCH_PAGE).\n" + stamp, {"torch": ("torch", cpu["torch"][1])})
    _write(TORCH_FILES["cuda"], "# torch, CUDA build (make setup TORCH_BUILD=cuda): PyPI's Linux wheel and the CUDA "
           "libraries it pins; needs an NVIDIA driver for its CUDA version.\n" + stamp,
           {k: v for k, v in cuda.items() if k not in lock})
    return 0


def cmd_wheelhouse(args) -> int:
    """Every wheel of the lock (and of the torch build) in one folder, for ``make setup WHEELHOUSE=``."""
    out = Path(args.folder).resolve()
    out.mkdir(parents=True, exist_ok=True)
    target = []
    if args.python_version:
        target += ["--python-version", args.python_version]
    if args.platform:
        target += ["--platform", args.platform]
    files = [LOCK] + ([] if args.torch == "none" else [TORCH_FILES[args.torch]])
    for path in files:
        # --no-deps: the lock is already every package; a package with no wheel comes as its sdist
        page = ["--find-links", args.torch_page] if path == TORCH_FILES["cpu"] and args.torch_page else []
        _pip("download", "--no-deps", "--quiet", "--disable-pip-version-check", "-d", str(out), *target, *page,
             "-r", str(path))
    for sdist in sorted(p for p in out.iterdir() if p.name.endswith((".tar.gz", ".zip"))):
        before = set(out.glob("*.whl"))
        _pip("wheel", "--no-deps", "--quiet", "--disable-pip-version-check", "-w", str(out), str(sdist))
        sdist.unlink()
        wheels = [p.name for p in set(out.glob("*.whl")) - before]
        if args.platform and not all(w.endswith("-none-any.whl") for w in wheels):
            raise SystemExit(f"{sdist.name} has no wheel for {args.platform} and builds only for this machine "
                             f"({wheels}); make the wheelhouse on a machine of the target platform")
    for name, version in expected(args.torch).values():
        stem = canonical(name).replace("-", "_")
        if not any(canonical(p.name.split("-")[0]).replace("-", "_") == stem and p.name.split("-")[1] == version
                   for p in out.glob("*.whl")):
            raise SystemExit(f"wheelhouse {out}: no wheel of {name}=={version}")
    built = [p.name for p in out.glob("*.whl") if not p.name.endswith("-none-any.whl")]
    print(f"wheelhouse {out}: {len(list(out.glob('*.whl')))} wheels ({len(built)} platform-specific); "
          f"install with: make setup WHEELHOUSE={out} TORCH_BUILD={args.torch}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/lock.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("resolve", help="write requirements/*.txt afresh from pyproject.toml's bounds")
    p.add_argument("--torch-version", default="2.13.0")
    p.set_defaults(func=cmd_resolve)
    p = sub.add_parser("check", help="exit 1 naming each difference between this environment and the lock")
    p.add_argument("--torch", choices=["cpu", "cuda", "none"], default="cpu")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("wheelhouse", help="download every locked wheel into a folder (sdists built into wheels)")
    p.add_argument("folder")
    p.add_argument("--torch", choices=["cpu", "cuda", "none"], default="cpu")
    p.add_argument("--python-version", help="target Python, e.g. 3.11 (default: this one)")
    p.add_argument("--platform", help="target platform tag, e.g. manylinux_2_28_x86_64 (default: this machine)")
    p.add_argument("--torch-page", default=CPU_INDEX, help="where torch's CPU build is found (a --find-links page)")
    p.set_defaults(func=cmd_wheelhouse)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
