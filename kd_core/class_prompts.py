"""Class prompts for synthetic training sets (DM-KD): N prompts per class, each with its own seed.

Classes are combinations of grammar attributes (shapes world: ``labels: [shape]`` gives 4 classes,
``[colour, shape]`` 24), or plain class names filled into a template such as ``"a photo of a {label}"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from kd_core.errors import KDError
from kd_core.io import write_parquet
from kd_core.prompts import PROMPT_SCHEMA, load_grammar

CLASS_PROMPT_SCHEMA = PROMPT_SCHEMA.append(pa.field("label", pa.string()))


def grammar_classes(grammar: str, labels: list[str]) -> list[str]:
    """Every class of a grammar's label attributes, as ``"<value> <value>"`` strings, sorted."""
    g = load_grammar(grammar)
    unknown = [a for a in labels if a not in g.attributes]
    if unknown:
        raise KDError(f"label attribute(s) {unknown} are not attributes of grammar {g.name!r}; it has {g.attributes}")
    return sorted({" ".join(attrs[a] for a in labels) for _, attrs in g.all_prompts()})


def class_prompts(n_per_class: int, seed: int, grammar: str | None = None, labels: list[str] | None = None,
                  classes: list[str] | None = None, template: str = "a photo of a {label}",
                  negative_prompt: str = "") -> pd.DataFrame:
    """``n_per_class`` prompts per class, each with its own seed (split ``synthetic``).

    With a grammar, a class's prompts are drawn (with replacement) from the grammar prompts whose
    label attributes make that class, so the other attributes vary; otherwise ``template`` is
    filled with the class name.
    """
    rng = np.random.default_rng(seed)
    rows = []
    if grammar is not None:
        g = load_grammar(grammar)
        names = grammar_classes(grammar, labels or [])
        by_class: dict[str, list[tuple[str, dict]]] = {c: [] for c in names}
        for prompt, attrs in g.all_prompts():
            by_class[" ".join(attrs[a] for a in labels)].append((prompt, attrs))
        attributes = g.attributes
    else:
        if not classes:
            raise KDError("class prompts need a grammar with label attributes or a list of class names")
        names, attributes = list(classes), []
        by_class = {c: [(template.format(label=c), {})] for c in names}
    seeds = rng.choice(2**31 - 1, size=n_per_class * len(names), replace=False)
    for ci, name in enumerate(names):
        pool = by_class[name]
        for i, pick in enumerate(rng.integers(len(pool), size=n_per_class)):
            prompt, attrs = pool[int(pick)]
            rows.append({"prompt_id": f"class{ci:03d}-{i:05d}", "split": "synthetic", "prompt": prompt,
                         "negative_prompt": negative_prompt, "seed": int(seeds[ci * n_per_class + i]),
                         "grammar": grammar or "", **{a: attrs.get(a) for a in attributes}, "label": name})
    return pd.DataFrame(rows, columns=PROMPT_SCHEMA.names + attributes + ["label"])


def write_class_prompts(table: pd.DataFrame, out_path: str | Path, metadata: dict | None = None) -> None:
    schema = PROMPT_SCHEMA
    for a in table.columns[len(PROMPT_SCHEMA) :]:
        schema = schema.append(pa.field(a, pa.string()))
    write_parquet(table, out_path, schema, "dmkd/class_prompts", metadata)
