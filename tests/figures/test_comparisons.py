import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kd_core.errors import KDError
from kd_core.figures.comparisons import compare_models, prompt_filler_grid


def _model(folder, n_eval=4, n_filler=12, size=8, offset=0):
    folder.mkdir(parents=True)
    rows = []
    for split, n in (("eval", n_eval), ("filler", n_filler)):
        for i in range(n):
            f = f"{split}-{i:05d}_{i}.png"
            value = (offset + (0 if split == "eval" else 100) + 7 * i) % 256
            Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(folder / f)
            rows.append({"file": f, "prompt_id": f"{split}-{i:05d}", "seed": i, "split": split,
                         "prompt": f"a {split} prompt number {i}"})
    pd.DataFrame(rows).to_parquet(folder / "manifest.parquet")
    return folder / "manifest.parquet"


def test_grid_puts_the_main_image_top_left_of_each_block(tmp_path):
    layout = prompt_filler_grid(_model(tmp_path / "m"), tmp_path / "grid.png", blocks=4)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (32, 32, 3) and (tmp_path / "grid.pdf").stat().st_size > 0
    for k in range(4):
        by, bx = divmod(k, 2)
        block = grid[16 * by : 16 * by + 16, 16 * bx : 16 * bx + 16, 0]
        assert block[0, 0] == 7 * k  # main image k
        assert [block[0, 8], block[8, 0], block[8, 8]] == [100 + 7 * (3 * k + c) for c in range(3)]  # its fillers
    assert list(layout["role"]).count("main") == 4 and len(layout) == 16


def test_grid_needs_enough_images(tmp_path):
    with pytest.raises(KDError, match="needs 16 'eval' and 48 'filler' images"):
        prompt_filler_grid(_model(tmp_path / "m"), tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()


def test_side_by_side_and_difference_maps(tmp_path):
    manifests = {"teacher": _model(tmp_path / "teacher"), "base_student": _model(tmp_path / "base", offset=30),
                 "lora_student": _model(tmp_path / "lora", offset=10)}
    side, diff = compare_models(manifests, tmp_path / "side.png", tmp_path / "diff.png", n=3)
    for name in ("side", "diff"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 1000
    # side by side: 3 rows x (3 models + a prompt column); teacher first, each row one prompt and seed
    axes = side.axes
    assert len(axes) == 3 * 4 and [a.get_title() for a in axes[:3]] == ["teacher", "base_student", "lora_student"]
    first = [a.get_images()[0].get_array()[0, 0, 0] for a in axes[:3]]
    assert first == [0, 30, 10]  # row 0 is eval image 0 of each model
    assert [t.get_text() for t in axes[3].texts] == ["a eval prompt number 0"]
    # difference maps: the reference, then |student - teacher| per student, with its mean absolute error
    maps = [a for a in diff.axes if a.get_images()][: 3]
    assert [a.get_title() for a in maps] == ["teacher", "|base_student\n- teacher|", "|lora_student\n- teacher|"]
    assert np.allclose(maps[1].get_images()[0].get_array(), 30 / 255) and maps[1].get_xlabel() == f"MAE {30 / 255:.3f}"
    assert np.allclose(maps[2].get_images()[0].get_array(), 10 / 255)


def test_comparisons_need_shared_prompts(tmp_path):
    a = _model(tmp_path / "teacher")
    b = pd.read_parquet(a).assign(seed=99)
    (tmp_path / "s").mkdir()
    b.to_parquet(tmp_path / "s" / "manifest.parquet")
    with pytest.raises(KDError, match="share no 'eval' image"):
        compare_models({"teacher": a, "student": tmp_path / "s" / "manifest.parquet"}, tmp_path / "x.png", tmp_path / "y.png")
