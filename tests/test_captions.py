"""kd_core.captions: caption datasets from the Hugging Face hub (``datasets.load_dataset`` replaced by
a real in-memory ``datasets.Dataset``: no network)."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from kd_core.captions import DataConfig, load_pairs
from kd_core.errors import KDError

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8), c) for c in COLOURS], "style": [12, 3, 12, 12],
                                     "artist": ["a", "b", "c", "d"], "text": ["one", "two", "three", "four"]})
    ds = ds.cast_column("image", datasets.Image())
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: calls.append((name, split)) or ds)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    return calls


def _colour(path):
    return tuple(np.asarray(Image.open(path))[0, 0].tolist())


def test_hub_dataset_filter_template_and_limit(hub):
    pairs = load_pairs(DataConfig("huggan/wikiart", caption_template="a painting by {artist}", filter={"style": 12},
                                  max_items=2))
    assert hub == [("huggan/wikiart", "train")]
    assert pairs["prompt"].tolist() == ["a painting by a", "a painting by c"]
    assert [_colour(p) for p in pairs["image"]] == [COLOURS[0], COLOURS[2]]


def test_hub_dataset_caption_column_and_split(hub):
    pairs = load_pairs(DataConfig("org/captions", split="validation"))
    assert hub == [("org/captions", "validation")]
    assert pairs["prompt"].tolist() == ["one", "two", "three", "four"]
    assert [_colour(p) for p in pairs["image"]] == COLOURS


def test_another_filter_never_reuses_the_images_of_the_first(hub):
    """The n-th image of a split depends on the filter: each selection has its own image files."""
    first = load_pairs(DataConfig("huggan/wikiart", filter={"style": 12}))
    second = load_pairs(DataConfig("huggan/wikiart", filter={"style": 3}))
    assert [_colour(p) for p in second["image"]] == [COLOURS[1]]
    assert second["prompt"].tolist() == ["two"] and set(first["image"]).isdisjoint(second["image"])
    mtimes = [p.stat().st_mtime_ns for p in map(Path, first["image"])]
    again = load_pairs(DataConfig("huggan/wikiart", filter={"style": 12}))
    assert again["image"].tolist() == first["image"].tolist()
    assert [p.stat().st_mtime_ns for p in map(Path, again["image"])] == mtimes  # written once


def test_captionless_hub_dataset_without_template_is_one_line(hub, monkeypatch):
    plain = datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8))]}).cast_column("image", datasets.Image())
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: plain)
    with pytest.raises(KDError, match=r"dataset 'org/plain' has no caption column; set lora.caption_template"):
        load_pairs(DataConfig("org/plain"))
