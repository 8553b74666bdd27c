"""Attribute classifier of the shapes world: reads shape, colour, size, position and background.

It is the offline stand-in for CLIP: per-attribute accuracy on generated images measures prompt
alignment, and its penultimate features feed an offline FID/KID.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from kd_core.io import atomic_path, write_json, write_parquet
from kd_core.metrics.bootstrap import bootstrap_ci
from kd_core.seeding import seed_everything
from kd_core.world.dataset import load_images, load_split


@dataclass(frozen=True)
class AttributeClassifierConfig:
    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 32
    seed: int = 0


class AttributeClassifier(nn.Module):
    """Four stride-2 conv blocks, then one linear head per attribute (spatial layout kept for position)."""

    def __init__(self, classes: dict[str, list[str]], image_size: int = 32, width: int = 32):
        super().__init__()
        self.classes, self.image_size, self.width = classes, image_size, width
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2 if i else 1, padding=1),
                       nn.GroupNorm(8, chans[i + 1]), nn.SiLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                  nn.Linear(16 * chans[-1], 128), nn.SiLU())
        self.heads = nn.ModuleDict({k: nn.Linear(128, len(v)) for k, v in classes.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        return {k: head(h) for k, head in self.heads.items()}


def save_classifier(model: AttributeClassifier, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_json(out_dir / "config.json", {"classes": model.classes, "image_size": model.image_size, "width": model.width})


def load_classifier(model_dir: str | Path) -> AttributeClassifier:
    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    model = AttributeClassifier(cfg["classes"], cfg["image_size"], cfg["width"])
    model.load_state_dict(load_file(model_dir / "model.safetensors"))
    return model.eval()


def _targets(df: pd.DataFrame, classes: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([v.index(x) for x in df[k]]) for k, v in classes.items()}


@torch.no_grad()
def predict(model: AttributeClassifier, images: torch.Tensor, batch_size: int = 256) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {k: [] for k in model.classes}
    for i in range(0, len(images), batch_size):
        logits = model(images[i : i + batch_size])
        for k, v in logits.items():
            out[k] += [model.classes[k][j] for j in v.argmax(-1).tolist()]
    return out


ACCURACY_SCHEMA = pa.schema([("attribute", pa.string()), ("accuracy", pa.float64()), ("n", pa.int64())])


def train_attribute_classifier(data_table: str | Path, out_dir: str | Path, cfg: AttributeClassifierConfig,
                     attributes: list[str], image_size: int) -> pd.DataFrame:
    """Train on the real train split; write the model and held-out accuracy per attribute."""
    gen = seed_everything(cfg.seed)
    df, x = load_split(data_table, "train")
    classes = {a: sorted(df[a].unique().tolist()) for a in attributes}
    y = _targets(df, classes)
    model = AttributeClassifier(classes, image_size, cfg.width)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.15)
    model.train()
    for _ in tqdm(range(cfg.steps), desc="train classifier", mininterval=2):
        idx = torch.randint(len(x), (cfg.batch_size,), generator=gen)
        xb = x[idx]
        # Robustness to generated images: mild blur and noise.
        if torch.rand(1, generator=gen).item() < 0.5:
            xb = F.avg_pool2d(F.pad(xb, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        xb = xb + 0.05 * torch.randn(xb.shape, generator=gen)
        logits = model(xb)
        loss = sum(F.cross_entropy(logits[k], y[k][idx]) for k in classes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    test_df, x_test = load_split(data_table, "test")
    pred = predict(model, x_test)
    rows = [{"attribute": k, "accuracy": float((pd.Series(pred[k]) == test_df[k]).mean()), "n": len(test_df)} for k in classes]
    save_classifier(model, out_dir)
    acc = pd.DataFrame(rows)
    write_parquet(acc, Path(out_dir) / "heldout_accuracy.parquet", ACCURACY_SCHEMA, "world/classifier_accuracy",
                  {"config": asdict(cfg)})
    return acc


ALIGNMENT_SCHEMA = pa.schema([
    ("model", pa.string()), ("split", pa.string()), ("prompt_id", pa.string()), ("seed", pa.int64()), ("attribute", pa.string()),
    ("target", pa.string()), ("predicted", pa.string()), ("correct", pa.bool_()),
])


def attribute_accuracy(manifest: str | Path, classifier_dir: str | Path, out_path: str | Path, model_name: str) -> pd.DataFrame:
    """Per image and attribute: does the classifier read the prompted value from the generated image?"""
    clf = load_classifier(classifier_dir)
    man = pd.read_parquet(manifest)
    root = Path(manifest).parent
    x = load_images([root / f for f in man["file"]], clf.image_size)
    pred = predict(clf, x)
    rows = []
    for k in clf.classes:
        if k not in man.columns:
            continue
        for i, r in enumerate(man.itertuples()):
            target = getattr(r, k)
            rows.append({"model": model_name, "split": r.split, "prompt_id": r.prompt_id, "seed": r.seed, "attribute": k,
                         "target": target, "predicted": pred[k][i], "correct": pred[k][i] == target})
    out = pd.DataFrame(rows)
    write_parquet(out, out_path, ALIGNMENT_SCHEMA, "metrics/attributes", {"classifier": str(classifier_dir)})
    return out


SUMMARY_SCHEMA = pa.schema([
    ("model", pa.string()), ("split", pa.string()), ("attribute", pa.string()), ("accuracy", pa.float64()), ("ci_low", pa.float64()),
    ("ci_high", pa.float64()), ("n", pa.int64()),
])


def summarize_accuracy(paths: list[str | Path], out_path: str | Path, seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Mean per-attribute accuracy per model and prompt split, with a percentile bootstrap 95% CI over images."""
    rng = np.random.default_rng(seed)
    df = pd.concat([pd.read_parquet(p) for p in paths])
    rows = []
    for (model, split, attr), g in df.groupby(["model", "split", "attribute"], sort=False):
        c = g["correct"].to_numpy(dtype=float)
        lo, hi = bootstrap_ci(c, rng, n_boot)
        rows.append({"model": model, "split": split, "attribute": attr, "accuracy": c.mean(), "ci_low": lo, "ci_high": hi,
                     "n": len(c)})
    out = pd.DataFrame(rows)
    write_parquet(out, out_path, SUMMARY_SCHEMA, "metrics/attribute_accuracy",
                  {"bootstrap": n_boot, "seed": seed, "ci": "percentile 95%"})
    return out
