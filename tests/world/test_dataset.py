import pandas as pd
import pytest
from PIL import Image

import kd_core.world.dataset as dataset
from kd_core.world.dataset import WorldDataConfig, make_real_dataset


def test_images_folder_is_written_whole_and_replaced_on_rerun(tmp_path):
    table = tmp_path / "data.parquet"
    df = make_real_dataset(WorldDataConfig(n_train=6, n_test=2, image_size=16), table)
    assert list(df["split"]) == ["train"] * 6 + ["test"] * 2
    files = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert files == [f"{i:06d}.png" for i in range(8)]
    assert all(Image.open(tmp_path / p).size == (16, 16) for p in df["image"])

    make_real_dataset(WorldDataConfig(n_train=3, n_test=1, image_size=16), table)  # a smaller rerun
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{i:06d}.png" for i in range(4)]
    assert len(pd.read_parquet(table)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet", "images"]


def test_an_interrupted_render_keeps_the_earlier_images(tmp_path, monkeypatch):
    table = tmp_path / "data.parquet"
    make_real_dataset(WorldDataConfig(n_train=4, n_test=0, image_size=16), table)
    before = {p.name: p.read_bytes() for p in (tmp_path / "images").iterdir()}
    calls = []

    def failing(attrs, size, rng):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(attrs, size, rng)

    original = dataset.render
    monkeypatch.setattr(dataset, "render", failing)
    with pytest.raises(KeyboardInterrupt):
        make_real_dataset(WorldDataConfig(n_train=8, n_test=0, image_size=16, seed=5), table)
    assert {p.name: p.read_bytes() for p in (tmp_path / "images").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet", "images"]
