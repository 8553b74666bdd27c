"""Prompt alignment: CLIP score (Hessel et al. 2021; 100 x cosine of CLIP image and text
embeddings, floored at 0) of every image against its prompt, through torchmetrics.

The CLIP model comes from a hub id (Hugging Face cache) or a local folder and is loaded here with
safetensors only, then handed to torchmetrics. In the shapes world, per-attribute accuracy read by
the attribute classifier (``kd_core.world.classifier``) is the offline analogue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchmetrics.multimodal.clip_score import CLIPScore
from tqdm.auto import tqdm

from kd_core.errors import ConfigError
from kd_core.io import load_rgb, write_parquet
from kd_core.metrics.tables import PER_IMAGE_SCHEMA
from kd_core.models.integrity import check_local_model, check_model_component

ALIGNMENT_SCHEMA = PER_IMAGE_SCHEMA  # reference: the CLIP model


class _TensorFeatures(torch.nn.Module):
    """CLIPModel whose ``get_*_features`` return tensors: transformers 5 returns output objects
    (projection in ``pooler_output``), which torchmetrics 1.9's CLIPScore cannot normalise."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    @staticmethod
    def _tensor(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def load_clip(source: str):
    """(CLIPModel, CLIPProcessor) from a hub id or folder, safetensors only."""
    from transformers import CLIPModel, CLIPProcessor

    check_local_model(source, "CLIP model", check_model_component)
    try:
        model = CLIPModel.from_pretrained(source, use_safetensors=True).eval()
        processor = CLIPProcessor.from_pretrained(source)
    except OSError as exc:
        raise ConfigError(f"CLIP model {source!r} cannot be loaded ({str(exc).splitlines()[0]}); give a local folder "
                          "or a hub id in the Hugging Face cache") from None
    return _TensorFeatures(model), processor


def clip_scores(images: list[np.ndarray], prompts: list[str], source: str, device: str = "cpu") -> list[float]:
    """CLIP score of each uint8 RGB image against its prompt."""
    model, processor = load_clip(source)
    metric = CLIPScore(model_name_or_path=lambda: (model, processor)).to(device)
    scores = []
    with torch.no_grad():
        for image, prompt in tqdm(zip(images, prompts, strict=True), total=len(images), desc="CLIP score", unit="img"):
            x = torch.from_numpy(np.array(image)).permute(2, 0, 1).to(device)
            scores.append(float(metric(x[None], [prompt])))
            metric.reset()
    return scores


def clip_score_table(manifest: str | Path, out_path: str | Path, model_name: str, source: str,
                     device: str = "cpu") -> pd.DataFrame:
    """One CLIP-score row per image of ``manifest``."""
    man = pd.read_parquet(manifest)
    root = Path(manifest).parent
    scores = clip_scores([load_rgb(root / f) for f in man["file"]], list(man["prompt"]), source, device)
    out = pd.DataFrame({"model": model_name, "reference": source, "prompt_id": man["prompt_id"], "seed": man["seed"],
                        "split": man["split"], "metric": "clip_score", "value": scores})
    write_parquet(out, out_path, ALIGNMENT_SCHEMA, "metrics/alignment",
                  {"clip_model": source, "protocol": "torchmetrics CLIPScore, 100 x cosine, floored at 0"})
    return out
