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
import zlib
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

    grammar: str | None = "shapes"  # None: an unconditional study (no text), one sample per row, named by seed
    filler_grammar: str = "shapes"
    n_train: int = 256
    n_eval: int = 32
    n_filler: int = 48
    seeds_per_prompt: int = 1
    negative_prompt: str | None = None
    seed: int = 0


#: Config fields each split's table depends on (see :func:`split_fields`), besides ``seed``.
_SPLIT_FIELDS = {
    "train": ("grammar", "n_train", "seeds_per_prompt", "negative_prompt"),
    "eval": ("grammar", "n_train", "n_eval", "seeds_per_prompt", "negative_prompt"),
}
_SMALL = 200_000  # grammars up to this size are sampled by an exact seeded permutation


def _stream(seed: int, *names: str) -> np.random.Generator:
    """An independent random stream per purpose: what one split draws never shifts another's."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def _sample_unique(grammar: Grammar, n: int, rng: np.random.Generator, taken: set[str],
                   reverse: bool = False) -> list[tuple[str, dict]]:
    """``n`` distinct prompts not in ``taken`` (which is updated), in a seeded random order; the first
    ``k`` of them do not depend on ``n``. ``reverse``: from the far end of the same permutation."""
    small = grammar.size <= _SMALL
    free = grammar.size - sum(grammar.render(i)[0] in taken for i in range(grammar.size)) if taken and small else grammar.size
    if n > free:
        raise ConfigError(f"{n} prompts requested from grammar {grammar.name!r}, which has only {free} distinct prompts left")
    out = []
    if small:  # small space: a seeded permutation, exact and fast
        order = rng.permutation(grammar.size)
        for i in order[::-1] if reverse else order:
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


def split_fields(cfg: PromptConfig, split: str) -> tuple[str, ...]:
    """The fields of ``cfg`` (besides ``seed``) that the ``split`` table depends on: a change to any
    other leaves it byte for byte as it was, so that, e.g., more eval prompts keep the train table.

    Train and eval prompts are a prefix and the next slice of one seeded order of the main grammar.
    Filler prompts of the same (small) grammar come from the far end of that order, disjoint from
    train and eval whatever their counts; from another grammar, or a huge one, they are drawn apart
    from the train and eval prompts, so they depend on those counts too.
    """
    if cfg.grammar is None:  # unconditional: each split its own count and seed stream
        return ("grammar", f"n_{split}", "seeds_per_prompt")
    if split in _SPLIT_FIELDS:
        return _SPLIT_FIELDS[split]
    fields = ("grammar", "filler_grammar", "n_filler", "seeds_per_prompt", "negative_prompt")
    if cfg.filler_grammar == cfg.grammar and load_grammar(cfg.grammar).size <= _SMALL:
        return fields
    return fields + ("n_train", "n_eval")


def _main_count(cfg: PromptConfig, main: Grammar, with_eval: bool) -> int:
    """n_train (+ n_eval): the main grammar's prompts a split reads; more than it has is an error."""
    n = cfg.n_train + (cfg.n_eval if with_eval else 0)
    if n > main.size:
        keys = "prompts.n_train" + (" + prompts.n_eval" if with_eval else "")
        raise ConfigError(f"{keys} = {n} exceeds the {main.size} distinct prompts of grammar {main.name!r}; lower them")
    return n


def synthesize_split(cfg: PromptConfig, split: str) -> pd.DataFrame:
    """The ``split`` table (train, eval or filler): deterministic in the fields :func:`split_fields` names."""
    if cfg.grammar is None:
        return _unconditional_split(cfg, split)
    main = load_grammar(cfg.grammar)
    same = cfg.filler_grammar == cfg.grammar and main.size <= _SMALL
    # reads n_train (and n_eval) only where the split depends on them
    n_main = _main_count(cfg, main, split != "train") if split != "filler" or not same else 0
    grammar = main
    order = _stream(cfg.seed, "prompts", main.name)  # the main grammar's one seeded order
    if split != "filler":
        sampled = _sample_unique(main, n_main, order, set())
        part = sampled[: cfg.n_train] if split == "train" else sampled[cfg.n_train :]
    else:
        grammar = load_grammar(cfg.filler_grammar)
        # the same grammar: the far end of the main order (the config check keeps the three counts
        # within the grammar, so they never meet); another: apart from the train and eval prompts
        taken = set() if same else {p for p, _ in _sample_unique(main, n_main, order, set())}
        rng = order if same else _stream(cfg.seed, "filler", grammar.name)
        try:
            part = _sample_unique(grammar, cfg.n_filler, rng, taken, reverse=same)
        except ConfigError as exc:
            raise ConfigError(f"prompts.n_filler = {cfg.n_filler} is too large: {exc}; lower it") from None
    neg = cfg.negative_prompt if cfg.negative_prompt is not None else grammar.negative_prompt
    seeds = _stream(cfg.seed, "seeds", split)
    rows = []
    for i, (prompt, attrs) in enumerate(part):
        for seed in seeds.choice(2**31 - 1, size=cfg.seeds_per_prompt, replace=False):
            row = {"prompt_id": f"{split}-{i:05d}", "split": split, "prompt": prompt,
                   "negative_prompt": neg, "seed": int(seed), "grammar": grammar.name}
            rows.append(row | {a: attrs.get(a) for a in grammar.attributes})
    return pd.DataFrame(rows, columns=PROMPT_SCHEMA.names + grammar.attributes)


#: The ``grammar`` column of an unconditional study's tables.
UNCONDITIONAL = "unconditional"


def _unconditional_split(cfg: PromptConfig, split: str) -> pd.DataFrame:
    """An unconditional study's ``split``: ``n_<split>`` samples, each its own row with an empty
    prompt and a distinct seed of the split's own stream; ``prompt_id`` names the sample. The
    first k samples do not depend on the count."""
    n = {"train": cfg.n_train, "eval": cfg.n_eval, "filler": cfg.n_filler}[split]
    rng, seeds = _stream(cfg.seed, "seeds", split), {}
    while len(seeds) < n:  # one draw at a time: a larger count keeps the first samples' seeds
        seeds.setdefault(int(rng.integers(2**31 - 1)), None)
    rows = [{"prompt_id": f"{split}-{i:05d}", "split": split, "prompt": "", "negative_prompt": "", "seed": int(seed),
             "grammar": UNCONDITIONAL} for i, seed in enumerate(seeds)]
    return pd.DataFrame(rows, columns=PROMPT_SCHEMA.names)


def synthesize_prompts(cfg: PromptConfig) -> dict[str, pd.DataFrame]:
    """The train / eval / filler prompt tables (deterministic in ``cfg.seed``)."""
    if cfg.grammar is None:
        return {split: _unconditional_split(cfg, split) for split in SPLITS}
    main = load_grammar(cfg.grammar)
    total = _main_count(cfg, main, with_eval=True) + cfg.n_filler
    if cfg.filler_grammar == cfg.grammar and total > main.size:
        raise ConfigError(f"prompts.n_train + n_eval + n_filler = {total} exceed the {main.size} distinct prompts "
                          f"of grammar {cfg.grammar!r}, which all three splits share; lower them")
    return {split: synthesize_split(cfg, split) for split in SPLITS}


def write_prompt_table(cfg: PromptConfig, split: str, out_path: str | Path, metadata: dict | None = None) -> pd.DataFrame:
    """Write one split's table; its metadata holds only the settings that split depends on."""
    df = synthesize_split(cfg, split)
    schema = PROMPT_SCHEMA
    for a in df.columns[len(PROMPT_SCHEMA):]:
        schema = schema.append(pa.field(a, pa.string()))
    settings = {k: getattr(cfg, k) for k in ("seed", *split_fields(cfg, split))}
    write_parquet(df, out_path, schema, f"prompts/{split}", {"config": settings, **(metadata or {})})
    return df


def write_prompt_tables(cfg: PromptConfig, out_paths: dict[str, str], metadata: dict | None = None) -> dict[str, pd.DataFrame]:
    return {split: write_prompt_table(cfg, split, out_paths[split], metadata) for split in SPLITS}


def iter_words(grammars: list[str]) -> list[str]:
    return sorted(set(itertools.chain.from_iterable(load_grammar(g).words for g in grammars)))
