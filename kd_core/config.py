"""Config validation (JSON schema with defaults) and typed dataclass configs built from it.

``validate_config`` does what Snakemake's ``validate`` does (jsonschema, defaults filled in) but
reports the first problem as one line naming the key and what is allowed, so the workflow can stop
before any job runs without a traceback; it is usable from a notebook too.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import importlib.util
import json
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match

from kd_core.errors import ConfigError

T = TypeVar("T")


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _strict_integer(checker, instance) -> bool:
    """Only ints count as integers (JSON schema draft 7 also takes 2.0, which range() and slicing refuse)."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    _with_defaults(jsonschema.Draft7Validator),
    type_checker=jsonschema.Draft7Validator.TYPE_CHECKER.redefine("integer", _strict_integer))

RENAMED = {"classifier_kd": "dmkd"}  # config keys of earlier versions -> their names now


def _describe(error: ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    schema = error.schema if isinstance(error.schema, dict) else {}
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"{key}." if error.absolute_path else ""
        if not error.absolute_path and extra[0] in RENAMED:
            return f"config key '{extra[0]}' is now called '{RENAMED[extra[0]]}'; rename it in your config file"
        return f"unknown config key '{where}{extra[0]}'; allowed keys here: {', '.join(allowed)}"
    if v == "required":
        return f"config key '{key}' lacks a required entry: {error.message}"
    if v == "enum":
        return f"config key '{key}' is {error.instance!r}; allowed: {', '.join(map(repr, error.validator_value))}"
    if v == "type":
        hint = f" (write {int(error.instance)})" if isinstance(error.instance, float) and error.instance.is_integer() else ""
        return f"config key '{key}' is {error.instance!r}, of the wrong type; expected {error.validator_value}{hint}"
    if v == "pattern" and key == "experiment":
        return (f"config key 'experiment' is {error.instance!r}; use a name of letters, digits, '_', '-' and '.' "
                "(not '.' or '..'): it names the folder results/<experiment>/")
    if v == "pattern" and key.endswith("device"):
        return f"config key '{key}' is {error.instance!r}; allowed: auto, cpu, cuda, cuda:<index>, mps"
    if v == "pattern":
        return f"config key '{key}' is {error.instance!r}; allowed: strings matching {error.validator_value}"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
        return f"config key '{key}' is {error.instance!r}, out of range; allowed: {op} {error.validator_value}"
    return f"config key '{key}': {error.message}"


def validate_config(config: Mapping[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Validate ``config`` against the YAML JSON-schema at ``schema_path``; return it with defaults.

    Raises :class:`ConfigError` with a one-line message for the most relevant violation.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    filled = copy.deepcopy(dict(config))
    error = best_match(_Validator(schema).iter_errors(filled))
    if error is not None:
        raise ConfigError(_describe(error))
    return filled


def build(cls: type[T], values: Mapping[str, Any] | None, **overrides: Any) -> T:
    """Build the dataclass ``cls`` from a config mapping (nested dataclasses, lists to tuples).

    Keys that ``cls`` does not have are ignored (the schema already rejected unknown keys).
    """
    values = {**(values or {}), **overrides}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        v, hint = values[f.name], hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        target = args[0] if isinstance(hint, types.UnionType) and len(args) == 1 else hint
        if dataclasses.is_dataclass(target) and isinstance(v, Mapping):
            v = build(target, v)
        elif typing.get_origin(target) is tuple and isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Settings a job reads when it runs that cannot change its outputs (a sampling batch size).

    Given to a rule as a param of this type, they reach the job, but Snakemake leaves them out of its
    rerun decision (it compares params of builtin types only), so changing them reruns nothing.
    """

    values: Mapping[str, Any]


def canonical_order(config: Mapping[str, Any], keep: tuple[str, ...] = ("models",)) -> dict[str, Any]:
    """``config`` with every mapping's keys sorted, recursively, but the key order of the top-level
    sections in ``keep`` (the order of ``models`` is the order of the models in tables and figures).

    Snakemake compares a job's params by their text, so two orders of the same keys would count as
    a change: moving ``lr`` above ``batch_size`` in a config file must rerun nothing."""
    def sort(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: sort(value[k]) for k in sorted(value)}
        return [sort(v) for v in value] if isinstance(value, list) else value

    out = sort(config)
    for key in keep:
        if isinstance(config.get(key), Mapping):
            out[key] = {k: sort(v) for k, v in config[key].items()}
    return out


@cache
def declared_fields(dataclass_path: str) -> frozenset[str]:
    """Field names of a dataclass, ``"module:Class"``, read from its source without importing it (the
    workflow plans its jobs without torch, which the trainers' modules import)."""
    module, name = dataclass_path.split(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"no such module {module!r}")
    for node in ast.parse(Path(spec.origin).read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return frozenset(n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name))
    raise ValueError(f"no class {name!r} in {module}")


def read_by(values: Mapping[str, Any], *dataclass_paths: str, keep: tuple[str, ...] = (),
            nested: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The entries of a config section that a job's typed configs read: the fields of the dataclasses
    (``"module:Class"``), the keys in ``keep``, and each ``nested`` key (a sub-section) projected on
    its own dataclass. A job's params are this, never a whole section, so that an edit to a setting
    the job does not read leaves them as they were."""
    fields = set(keep).union(*(declared_fields(p) for p in dataclass_paths))
    out = {k: v for k, v in values.items() if k in fields}
    for key, path in (nested or {}).items():
        if key in values:
            out[key] = read_by(values[key], path)
    return out


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"{loader.name}, line {line}: key {key!r} is given twice (first on line {seen[key]}); "
                              "keep one (YAML would silently drop the first)")
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_config_file(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file of settings (a config file, a grammar) as a mapping: a duplicate key, a syntax error
    (file, line and column), an empty file or a file that is not a mapping is one :class:`ConfigError` line."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        hint = "; check the --configfile path" if what == "config file" else ""
        raise ConfigError(f"{what} {path} cannot be read ({getattr(exc, 'strerror', None) or exc}){hint}") from None
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        value = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{what} {path}{where}: {exc.problem or exc.context}; fix the YAML there") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path}: {str(exc).splitlines()[0]}") from None
    finally:
        loader.dispose()
    if value is None:
        hint = ("; give at least 'experiment: <name>', or leave out --configfile to run the default experiment"
                if what == "config file" else "")
        raise ConfigError(f"{what} {path} is empty{hint}")
    if not isinstance(value, dict):
        raise ConfigError(f"{what} {path} holds a {type(value).__name__}, not a mapping of keys")
    return value
