import pandas as pd
import pytest
from PIL import Image

import kd_core.world.dataset as dataset
from kd_core.world.dataset import WorldDataConfig, load_split, make_real_dataset, make_world_split


def test_each_split_is_written_whole_and_replaced_on_rerun(tmp_path):
    df = make_real_dataset(WorldDataConfig(n_train=6, n_test=2, image_size=16), tmp_path)
    assert list(df["split"]) == ["train"] * 6 + ["test"] * 2
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [f"{i:06d}.png" for i in range(6)]
    assert all(Image.open(tmp_path / p).size == (16, 16) for p in df["image"])
    make_world_split(WorldDataConfig(n_train=3, image_size=16), "train", tmp_path / "train.parquet")  # a smaller rerun
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [f"{i:06d}.png" for i in range(3)]
    assert len(pd.read_parquet(tmp_path / "train.parquet")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test", "test.parquet", "train", "train.parquet"]


def test_a_split_does_not_depend_on_the_other_split_s_count(tmp_path):
    """More test images keep every train image (and the toy models trained on them); the train
    images are a prefix of the seed's stream, so more of them keep the first ones too."""
    make_real_dataset(WorldDataConfig(n_train=5, n_test=3, image_size=16), tmp_path / "a")
    make_real_dataset(WorldDataConfig(n_train=5, n_test=7, image_size=16), tmp_path / "b")
    make_real_dataset(WorldDataConfig(n_train=8, n_test=3, image_size=16), tmp_path / "c")
    train_a, x_a = load_split(tmp_path / "a", "train")
    train_b, x_b = load_split(tmp_path / "b", "train")
    assert train_a.equals(train_b) and (x_a == x_b).all()
    train_c, x_c = load_split(tmp_path / "c", "train")
    assert (x_c[:5] == x_a).all() and list(train_c["prompt"][:5]) == list(train_a["prompt"])
    test_a, xt_a = load_split(tmp_path / "a", "test")
    test_c, xt_c = load_split(tmp_path / "c", "test")
    assert test_a.equals(test_c) and (xt_a == xt_c).all()
    assert (load_split(tmp_path / "b", "test")[1][:3] == xt_a).all()
    assert load_split(tmp_path / "a" / "test.parquet", "test")[0].equals(test_a)  # one split's table works too


def test_an_interrupted_render_keeps_the_earlier_images(tmp_path, monkeypatch):
    table = tmp_path / "train.parquet"
    make_world_split(WorldDataConfig(n_train=4, image_size=16), "train", table)
    before = {p.name: p.read_bytes() for p in (tmp_path / "train").iterdir()}
    calls = []

    def failing(attrs, size, rng):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(attrs, size, rng)

    original = dataset.render
    monkeypatch.setattr(dataset, "render", failing)
    with pytest.raises(KeyboardInterrupt):
        make_world_split(WorldDataConfig(n_train=8, image_size=16, seed=5), "train", table)
    assert {p.name: p.read_bytes() for p in (tmp_path / "train").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train", "train.parquet"]
