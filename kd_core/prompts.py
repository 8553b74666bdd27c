"""Prompt synthesis from grammars kept as data (``kd_core/grammars/*.yaml`` or a user YAML file).

A grammar is a list of templates with slots, e.g. dog photographs (breed x pose x environment x
lighting), artistic filler prompts by category, or the shapes world. Sampling is seeded and
deterministic; the train / eval / filler splits are disjoint, free of duplicates, and written as
Parquet with one column per attribute (the slot values), which is the ground truth the shapes
world's classifier checks generated images against.
"""

from __future__ import annotations

import itertools
import math
import re
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from kd_core import grammars as builtin_grammars
from kd_core.config import read_config_file
from kd_core.errors import ConfigError
from kd_core.io import write_parquet

SPLITS = ("train", "eval", "filler")

#: Columns every prompt table has; attribute columns (one per grammar slot) follow them.
PROMPT_SCHEMA = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("split", pa.string()),
        ("prompt", pa.string()),
        ("negative_prompt", pa.string()),
        ("seed", pa.int64()),
        ("grammar", pa.string()),
    ]
)


@dataclass(frozen=True)
class Template:
    template: str
    slots: dict[str, list[str]]
    category: str | None = None

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.slots.values())

    def render(self, index: int) -> tuple[str, dict[str, str]]:
        """The ``index``-th combination in mixed-radix order: (prompt, attributes)."""
        attrs: dict[str, str] = {}
        for name, values in reversed(list(self.slots.items())):
            index, r = divmod(index, len(values))
            attrs[name] = values[r]
        attrs = {k: attrs[k] for k in self.slots}
        if self.category is not None:
            attrs = {"category": self.category, **attrs}
        return self.template.format(**attrs), attrs


@dataclass(frozen=True)
class Grammar:
    name: str
    templates: list[Template]
    negative_prompt: str = ""

    @property
    def size(self) -> int:
        return sum(t.size for t in self.templates)

    @property
    def attributes(self) -> list[str]:
        names: list[str] = []
        if any(t.category is not None for t in self.templates):
            names.append("category")
        for t in self.templates:
            names += [s for s in t.slots if s not in names]
        return names

    @property
    def words(self) -> list[str]:
        """Every word the grammar can produce (for a word-level tokenizer)."""
        text = " ".join(
            [t.template for t in self.templates]
            + [v for t in self.templates for vs in t.slots.values() for v in vs]
            + [t.category or "" for t in self.templates]
        )
        text = re.sub(r"\{[a-z_]+\}", " ", text.lower())
        return sorted(set(re.findall(r"[a-z0-9']+", text)))

    def render(self, index: int) -> tuple[str, dict[str, str]]:
        for t in self.templates:
            if index < t.size:
                return t.render(index)
            index -= t.size
        raise IndexError(index)

    def all_prompts(self) -> list[tuple[str, dict[str, str]]]:
        return [self.render(i) for i in range(self.size)]


def load_grammar(name_or_path: str) -> Grammar:
    """Load a built-in grammar by name (``shapes``, ``dogs``, ``artistic``) or a YAML file.

    A file is read strictly (:func:`kd_core.config.read_config_file`) and its layout checked: a
    ``name``, a non-empty list of ``templates`` (each a ``template`` string whose ``{slots}`` have
    value lists, in the template or in the shared ``slots``); each problem is one line naming the file.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"grammar file {name_or_path!r} does not exist")
        data, where = read_config_file(path, "grammar file"), f"grammar file {path}"
    else:
        ref = resources.files(builtin_grammars) / f"{name_or_path}.yaml"
        if not ref.is_file():
            builtin = sorted(p.name.removesuffix(".yaml") for p in resources.files(builtin_grammars).iterdir() if p.name.endswith(".yaml"))
            raise ConfigError(f"unknown grammar {name_or_path!r}; built-in grammars: {builtin}, or a path to a .yaml file")
        data, where = yaml.safe_load(ref.read_text()), f"grammar {name_or_path!r}"
    layout = "see kd_core/grammars/shapes.yaml for the layout"
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise ConfigError(f"{where} lacks 'name: <grammar name>'; {layout}")
    if not isinstance(data.get("templates"), list) or not data["templates"]:
        raise ConfigError(f"{where} lacks a non-empty list 'templates'; {layout}")
    shared = data.get("slots") or {}
    templates = []
    for i, t in enumerate(data["templates"]):
        if not isinstance(t, dict) or not isinstance(t.get("template"), str):
            raise ConfigError(f"{where}: templates[{i}] is not a mapping with a 'template' string; {layout}")
        slots = {**shared, **(t.get("slots") or {})}
        used = [name for _, name, _, _ in string.Formatter().parse(t["template"]) if name]
        missing = [u for u in used if u not in slots]
        if missing:
            raise ConfigError(f"grammar {data['name']!r}: template {t['template']!r} uses undefined slot(s) {missing}")
        bad = [u for u in used if not isinstance(slots[u], list) or not slots[u]]
        if bad:
            raise ConfigError(f"{where}: slot(s) {bad} of templates[{i}] are not non-empty lists of values; {layout}")
        templates.append(Template(t["template"], {u: list(map(str, slots[u])) for u in used}, t.get("category")))
    return Grammar(data["name"], templates, data.get("negative_prompt", ""))


@dataclass(frozen=True)
class PromptConfig:
    """How many prompts of which grammar go into each split (see ``config/schema.yaml``)."""

    grammar: str = "shapes"
    filler_grammar: str = "shapes"
    n_train: int = 256
    n_eval: int = 32
    n_filler: int = 48
    seeds_per_prompt: int = 1
    negative_prompt: str | None = None
    seed: int = 0


def _sample_unique(grammar: Grammar, n: int, rng: np.random.Generator, taken: set[str]) -> list[tuple[str, dict]]:
    """``n`` distinct prompts not in ``taken`` (which is updated), in a seeded random order."""
    small = grammar.size <= 200_000
    free = grammar.size - sum(grammar.render(i)[0] in taken for i in range(grammar.size)) if taken and small else grammar.size
    if n > free:
        raise ConfigError(f"{n} prompts requested from grammar {grammar.name!r}, which has only {free} distinct prompts left")
    out = []
    if small:  # small space: a seeded permutation, exact and fast
        for i in rng.permutation(grammar.size):
            prompt, attrs = grammar.render(int(i))
            if prompt not in taken:
                taken.add(prompt)
                out.append((prompt, attrs))
                if len(out) == n:
                    break
        return out
    while len(out) < n:  # huge space: rejection sampling
        prompt, attrs = grammar.render(int(rng.integers(grammar.size)))
        if prompt not in taken:
            taken.add(prompt)
            out.append((prompt, attrs))
    return out


def synthesize_prompts(cfg: PromptConfig) -> dict[str, pd.DataFrame]:
    """Sample the train / eval / filler prompt tables (deterministic in ``cfg.seed``)."""
    main, filler = load_grammar(cfg.grammar), load_grammar(cfg.filler_grammar)
    rng = np.random.default_rng(cfg.seed)
    taken: set[str] = set()
    need = {"train": cfg.n_train, "eval": cfg.n_eval}
    if cfg.n_train + cfg.n_eval > main.size:
        raise ConfigError(
            f"prompts.n_train + prompts.n_eval = {cfg.n_train + cfg.n_eval} exceeds the {main.size} distinct "
            f"prompts of grammar {main.name!r}; lower them"
        )
    sampled = _sample_unique(main, cfg.n_train + cfg.n_eval, rng, taken)
    parts = {"train": sampled[: need["train"]], "eval": sampled[need["train"] :]}
    try:
        parts["filler"] = _sample_unique(filler, cfg.n_filler, rng, taken)
    except ConfigError as exc:
        raise ConfigError(f"prompts.n_filler = {cfg.n_filler} is too large: {exc}; lower it") from None
    tables = {}
    for split in SPLITS:
        grammar = filler if split == "filler" else main
        neg = cfg.negative_prompt if cfg.negative_prompt is not None else grammar.negative_prompt
        rows = []
        for i, (prompt, attrs) in enumerate(parts[split]):
            seeds = rng.choice(2**31 - 1, size=cfg.seeds_per_prompt, replace=False)
            for seed in seeds:
                row = {"prompt_id": f"{split}-{i:05d}", "split": split, "prompt": prompt,
                       "negative_prompt": neg, "seed": int(seed), "grammar": grammar.name}
                rows.append(row | {a: attrs.get(a) for a in grammar.attributes})
        columns = PROMPT_SCHEMA.names + grammar.attributes
        tables[split] = pd.DataFrame(rows, columns=columns)
    return tables


def write_prompt_tables(cfg: PromptConfig, out_paths: dict[str, str], metadata: dict | None = None) -> dict[str, pd.DataFrame]:
    tables = synthesize_prompts(cfg)
    for split, df in tables.items():
        schema = PROMPT_SCHEMA
        for a in df.columns[len(PROMPT_SCHEMA):]:
            schema = schema.append(pa.field(a, pa.string()))
        write_parquet(df, out_paths[split], schema, f"prompts/{split}",
                      {"config": cfg.__dict__, **(metadata or {})})
    return tables


def iter_words(grammars: list[str]) -> list[str]:
    return sorted(set(itertools.chain.from_iterable(load_grammar(g).words for g in grammars)))
