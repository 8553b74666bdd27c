"""Whole-experiment checks run when the workflow starts, before any job: schema, grammars, paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_core.config import validate_config
from kd_core.errors import ConfigError, KDError
from kd_core.prompts import load_grammar
from kd_core.sources import check_source
from kd_core.world.render import DEFAULTS


def validate_experiment(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Validate against the schema (defaults filled in), then check grammars, sizes and local paths."""
    cfg = validate_config(config, schema_path)
    p = cfg["prompts"]
    grammars = {}
    for key in ("grammar", "filler_grammar"):
        try:
            grammars[key] = load_grammar(p[key])
        except ConfigError as exc:
            raise ConfigError(f"config key 'prompts.{key}': {exc}") from None
    main = grammars["grammar"]
    if cfg["world"]["enabled"]:
        drawable = set(DEFAULTS)
        for t in main.templates:
            if set(t.slots) - drawable:
                raise ConfigError(f"config key 'prompts.grammar' is {p['grammar']!r}, whose slots "
                                  f"{sorted(set(t.slots) - drawable)} the shapes world cannot draw; use a shapes grammar "
                                  "(slots among " + ", ".join(sorted(drawable)) + ") or set 'world.enabled: false'")
    if p["n_train"] + p["n_eval"] > main.size:
        raise ConfigError(f"config keys 'prompts.n_train' + 'prompts.n_eval' = {p['n_train'] + p['n_eval']} exceed "
                          f"the {main.size} distinct prompts of grammar {main.name!r}; lower them")
    for name, model in cfg["models"].items():
        key = f"models.{name}.source"
        try:
            check_source(model["source"], key)
            if model["generation"]["vae"]:
                check_source(model["generation"]["vae"], f"models.{name}.generation.vae")
        except KDError as exc:
            raise ConfigError(str(exc)) from None
        if model["source"].startswith("toy:") and not cfg["world"]["enabled"]:
            raise ConfigError(f"config key '{key}' is {model['source']!r}, which needs 'world.enabled: true'")
        if "filler" in model["splits"] and p["n_filler"] == 0:
            raise ConfigError(f"config key 'models.{name}.splits' asks for filler images but 'prompts.n_filler' is 0")
    lora = cfg["lora"]
    if lora["enabled"]:
        if lora["student"] not in cfg["models"] or lora["student"] == "teacher":
            raise ConfigError(f"config key 'lora.student' is {lora['student']!r}; choose a student among "
                              f"{[m for m in cfg['models'] if m != 'teacher']}")
        if lora["data"] == "teacher" and "train" not in cfg["models"]["teacher"]["splits"]:
            raise ConfigError("config key 'lora.data' is 'teacher' but 'models.teacher.splits' lacks 'train'; add it")
        if lora["data"] != "teacher":
            try:
                check_source(lora["data"], "lora.data")
            except KDError as exc:
                raise ConfigError(str(exc)) from None
    return cfg
