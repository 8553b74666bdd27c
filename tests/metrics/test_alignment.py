import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchmetrics.functional.multimodal import clip_score

from kd_core.errors import ConfigError, KDError
from kd_core.metrics.alignment import clip_score_table, clip_scores, load_clip
from kd_core.models.tiny import build_tiny_clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny_clip"
    build_tiny_clip(path)
    return path


def test_clip_scores_equal_torchmetrics_functional(clip_dir):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    prompts = ["a small red circle", "a large blue square at the left", "a green cross"]
    scores = clip_scores(images, prompts, str(clip_dir))
    model, processor = load_clip(str(clip_dir))
    for img, prompt, s in zip(images, prompts, scores, strict=True):
        direct = clip_score(torch.from_numpy(img).permute(2, 0, 1)[None], [prompt], model_name_or_path=lambda: (model, processor))
        assert s == pytest.approx(float(direct), abs=1e-4)
        assert 0 <= s <= 100
    # the score depends on the prompt: the same image scored against other prompts differs
    assert len({round(v, 4) for v in clip_scores([images[0]] * 3, prompts, str(clip_dir))}) > 1


def test_clip_score_table(clip_dir, tmp_path):
    rng = np.random.default_rng(1)
    files = []
    for i in range(2):
        files.append(f"eval-{i:05d}_{i}.png")
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / files[-1])
    pd.DataFrame({"file": files, "prompt_id": ["eval-00000", "eval-00001"], "seed": [0, 1], "split": "eval",
                  "prompt": ["a red circle", "a blue square"]}).to_parquet(tmp_path / "manifest.parquet")
    out = clip_score_table(tmp_path / "manifest.parquet", tmp_path / "a.parquet", "student", str(clip_dir))
    assert list(out["metric"]) == ["clip_score"] * 2 and pd.read_parquet(tmp_path / "a.parquet").shape == out.shape


def test_missing_clip_model_is_one_line(tmp_path):
    with pytest.raises(KDError, match="CLIP model folder .* has no config.json"):
        load_clip(str(tmp_path))  # a folder, but not a model
    with pytest.raises(ConfigError, match="cannot be loaded"):
        load_clip(str(tmp_path / "nowhere"))
