import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kd_core.class_prompts import class_prompts, grammar_classes, write_class_prompts
from kd_core.errors import KDError
from kd_core.generate import MANIFEST_SCHEMA
from kd_core.io import write_parquet
from kd_core.train.dmkd_data import folder_images, manifest_images, world_images
from kd_core.world.dataset import WorldDataConfig, make_real_dataset


def test_grammar_classes_and_class_prompts():
    assert grammar_classes("shapes", ["shape"]) == ["circle", "cross", "square", "triangle"]
    assert len(grammar_classes("shapes", ["colour", "shape"])) == 24
    with pytest.raises(KDError, match=r"\['mood'\] are not attributes of grammar 'shapes'"):
        grammar_classes("shapes", ["mood"])
    df = class_prompts(5, seed=0, grammar="shapes", labels=["shape"])
    assert len(df) == 20 and df.groupby("label").size().tolist() == [5] * 4
    assert (df["label"] == df["shape"]).all() and df["seed"].is_unique and df["prompt_id"].is_unique
    assert all(row.shape in row.prompt for row in df.itertuples())
    assert df["colour"].nunique() > 1  # the other attributes vary within a class
    pd.testing.assert_frame_equal(df, class_prompts(5, seed=0, grammar="shapes", labels=["shape"]))
    named = class_prompts(2, seed=1, classes=["cat", "dog"], template="a photo of a {label}")
    assert list(named["prompt"]) == ["a photo of a cat"] * 2 + ["a photo of a dog"] * 2


def test_world_manifest_and_folder_images(tmp_path):
    table = tmp_path / "world"
    make_real_dataset(WorldDataConfig(n_train=12, n_test=4, image_size=16), table)
    classes = grammar_classes("shapes", ["shape"])
    train = world_images(table, "train", ["shape"], classes)
    df = pd.read_parquet(table / "train.parquet")
    assert train.images.shape == (12, 3, 16, 16) and [classes[i] for i in train.labels] == list(df["shape"])
    # a generation manifest of class prompts
    prompts = class_prompts(2, seed=0, grammar="shapes", labels=["shape"])
    write_class_prompts(prompts, tmp_path / "p.parquet")
    rows = []
    for r in prompts.itertuples():
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / f"{r.prompt_id}.png")
        rows.append({n: 0 for n in MANIFEST_SCHEMA.names} | {"file": f"{r.prompt_id}.png", "prompt_id": r.prompt_id,
                    "seed": r.seed, "split": "synthetic", "prompt": r.prompt, "negative_prompt": "", "model": "t",
                    "source": "s", "scheduler": "ddim", "dtype": "fp32", "device": "cpu", "settings_hash": "h",
                    "guidance_scale": 1.0, "wall_time_s": 0.0, "label": r.label})
    write_parquet(pd.DataFrame(rows), tmp_path / "manifest.parquet", MANIFEST_SCHEMA, "m")
    syn = manifest_images(tmp_path / "manifest.parquet", classes)
    assert len(syn) == 8 and syn.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert len(manifest_images(tmp_path / "manifest.parquet", classes, limit_per_class=1)) == 4
    with pytest.raises(KDError, match="not among the study's classes"):
        manifest_images(tmp_path / "manifest.parquet", ["circle"])
    # a folder, resized on read when sizes differ
    for i, (name, size) in enumerate([("a", 16), ("a", 16), ("b", 20)]):
        (tmp_path / "f" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size, size, 3), i, np.uint8)).save(tmp_path / "f" / name / f"{i}.png")
    with pytest.raises(KDError, match="mixes image sizes"):
        folder_images(tmp_path / "f")
    data = folder_images(tmp_path / "f", size=16)
    assert data.images.shape == (3, 3, 16, 16) and data.classes == ["a", "b"] and data.labels.tolist() == [0, 0, 1]
    assert len(folder_images(tmp_path / "f", size=16, limit_per_class=1)) == 2
