"""``python -m kd_core.check [CONFIG.yaml ...] [--config KEY=VALUE ...]``: check an experiment's
config files as the workflow does when it starts, and print one line.

Snakemake reads ``--configfile`` itself before the workflow's own checks run, and reports a YAML
syntax error without file or line (a missing file as a traceback). This command reads the files
strictly (:func:`kd_core.config.read_config_file`: duplicate keys, syntax errors with line and
column), merges them as Snakemake does (later files and ``--config`` override earlier ones), and
runs every check of :func:`kd_core.experiment.validate_experiment`. ``make demo`` runs it first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from kd_core.config import read_config_file
from kd_core.errors import KDError
from kd_core.experiment import validate_experiment

SCHEMA = "config/schema.yaml"  # next to it, config.yaml: the default experiment


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, nested mappings merged key by key (Snakemake's rule for config files)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _override(item: str) -> dict[str, Any]:
    """``a=1`` (Snakemake's ``--config`` syntax: a top-level key, a YAML value) as a mapping."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise KDError(f"--config {item!r} is not KEY=VALUE")
    return {key: yaml.safe_load(value) if value else None}


def read_configs(configfiles: list[str | Path], overrides: list[str] = ()) -> dict[str, Any]:
    """The config files merged as Snakemake merges them (later ones and ``overrides`` win), not yet validated."""
    config: dict[str, Any] = {}
    for path in configfiles:
        config = merged(config, read_config_file(path))
    for item in overrides:
        config = merged(config, _override(item))
    return config


def check(configfiles: list[str], overrides: list[str] = (), schema: str | Path = SCHEMA) -> dict[str, Any]:
    """The validated config (defaults filled in) of these files and overrides; KDError on the first problem."""
    return validate_experiment(read_configs(configfiles or [Path(schema).with_name("config.yaml")], overrides), schema)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kd_core.check", description=__doc__.splitlines()[0])
    parser.add_argument("configfiles", nargs="*", help="config files, later ones override earlier (default: config.yaml next to the schema)")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, as snakemake --config")
    parser.add_argument("--schema", default=SCHEMA)
    args = parser.parse_args(argv)
    try:
        cfg = check(args.configfiles, args.config, args.schema)
    except KDError as exc:
        sys.stderr.write(f"config error: {exc}\n")
        return 1
    print(f"config ok: experiment {cfg['experiment']!r}, outputs in results/{cfg['experiment']}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
