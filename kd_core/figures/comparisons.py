"""Image comparisons: teacher | base student | tuned students side by side per prompt, difference
maps against the teacher, and the 2x2 prompt/filler grid (after the CLIP-alignment study: each
2x2 block holds one image of a main prompt and three of filler prompts; 16 blocks, 64 images).
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from kd_core.errors import KDError
from kd_core.figures.style import Figure, model_order, plt, save_figure, style
from kd_core.io import atomic_path, load_rgb


def _images(manifest: str | os.PathLike) -> pd.DataFrame:
    man = pd.read_parquet(manifest)
    return man.assign(path=[str(Path(manifest).parent / f) for f in man["file"]])


def _common_prompts(manifests: dict[str, str | os.PathLike], split: str, n: int) -> tuple[dict[str, pd.DataFrame], list]:
    tables = {m: _images(p) for m, p in manifests.items()}
    keys = None
    for t in tables.values():
        k = list(zip(t.loc[t["split"] == split, "prompt_id"], t.loc[t["split"] == split, "seed"], strict=True))
        keys = k if keys is None else [x for x in keys if x in set(k)]
    if not keys:
        raise KDError(f"the models {', '.join(manifests)} share no {split!r} image to compare")
    return {m: t.set_index(["prompt_id", "seed"]) for m, t in tables.items()}, sorted(keys)[:n]


def side_by_side(manifests: dict[str, str | os.PathLike], out_png: str | os.PathLike, n: int = 8,
                 split: str = "eval") -> Figure:
    """Rows: the first ``n`` shared prompts; columns: the models (teacher, base student, tuned...)."""
    models = model_order(manifests)
    tables, keys = _common_prompts(manifests, split, n)
    with style():
        fig, axes = plt.subplots(len(keys), len(models) + 1, figsize=(1.6 * len(models) + 2.6, 1.6 * len(keys)),
                                 squeeze=False, gridspec_kw={"width_ratios": [1] * len(models) + [1.6]})
        for i, key in enumerate(keys):
            for j, m in enumerate(models):
                ax = axes[i, j]
                ax.imshow(load_rgb(tables[m].loc[key, "path"]))
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if i == 0:
                    ax.set_title(m)
            text = axes[i, -1]
            text.axis("off")
            label = tables[models[0]].loc[key, "prompt"] or f"seed {key[1]}"  # no text: the sample's seed
            text.text(0, 0.5, "\n".join(textwrap.wrap(label, 28)), va="center", fontsize=7)
        fig.suptitle(f"Same prompt and seed per row ({split} prompts)")
        fig.tight_layout()
        return save_figure(fig, out_png)


def difference_maps(manifests: dict[str, str | os.PathLike], out_png: str | os.PathLike, reference: str = "teacher",
                    n: int = 8, split: str = "eval") -> Figure:
    """Per prompt: the reference image, then |student - reference| (mean over RGB) for each student."""
    if reference not in manifests:
        raise KDError(f"difference maps need the reference model {reference!r}")
    students = [m for m in model_order(manifests) if m != reference]
    tables, keys = _common_prompts(manifests, split, n)
    with style():
        fig, axes = plt.subplots(len(keys), len(students) + 1, figsize=(1.7 * (len(students) + 1) + 0.8, 1.6 * len(keys)),
                                 squeeze=False)
        im = None
        for i, key in enumerate(keys):
            ref = load_rgb(tables[reference].loc[key, "path"]).astype(float) / 255
            axes[i, 0].imshow(ref)
            for j, m in enumerate(students, start=1):
                img = load_rgb(tables[m].loc[key, "path"], (ref.shape[1], ref.shape[0])).astype(float) / 255
                diff = np.abs(img - ref).mean(axis=2)
                im = axes[i, j].imshow(diff, cmap="magma", vmin=0, vmax=1)
                axes[i, j].set_xlabel(f"MAE {diff.mean():.3f}", fontsize=7)
            for ax in axes[i]:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
        for j, name in enumerate([reference, *[f"|{m}\n- {reference}|" for m in students]]):
            axes[0, j].set_title(name, fontsize=8)
        fig.colorbar(im, ax=axes, shrink=0.6, label="absolute difference")
        fig.suptitle(f"Difference maps against the {reference} ({split} prompts)")
        return save_figure(fig, out_png)


def prompt_filler_grid(manifest: str | os.PathLike | list[str | os.PathLike], out_png: str | os.PathLike, blocks: int = 16,
                       main_split: str = "eval", filler_split: str = "filler") -> pd.DataFrame:
    """An 8x8 grid of 2x2 blocks: block k holds main image k (top left) and filler images 3k..3k+2.

    Written as a plain PNG (pixels as generated) and a PDF; returns the layout (block, cell, image).
    """
    manifests = manifest if isinstance(manifest, list) else [manifest]  # one, or one per split
    manifest = manifests[0]
    man = pd.concat([_images(m) for m in manifests], ignore_index=True)
    main = man[man["split"] == main_split].sort_values(["prompt_id", "seed"]).head(blocks)
    filler = man[man["split"] == filler_split].sort_values(["prompt_id", "seed"]).head(3 * blocks)
    if len(main) < blocks or len(filler) < 3 * blocks:
        raise KDError(f"the 2x2 grid needs {blocks} {main_split!r} and {3 * blocks} {filler_split!r} images of "
                      f"{Path(manifest).parent.name!r}, found {len(main)} and {len(filler)}; add 'filler' to the "
                      "model's splits and set prompts.n_filler >= 48")
    side = int(np.ceil(np.sqrt(blocks)))
    first = load_rgb(main["path"].iloc[0])
    h, w = first.shape[:2]
    canvas = np.full((2 * side * h, 2 * side * w, 3), 255, np.uint8)
    rows = []
    for k in range(blocks):
        by, bx = divmod(k, side)
        cells = [main.iloc[k]] + [filler.iloc[3 * k + c] for c in range(3)]
        for c, r in enumerate(cells):
            cy, cx = divmod(c, 2)
            y, x = (2 * by + cy) * h, (2 * bx + cx) * w
            canvas[y : y + h, x : x + w] = load_rgb(r["path"], (w, h))
            rows.append({"block": k, "cell": c, "role": "main" if c == 0 else "filler", "prompt_id": r["prompt_id"],
                         "seed": int(r["seed"]), "prompt": r["prompt"]})
    with atomic_path(out_png, suffix=".png") as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
    with style():
        fig, ax = plt.subplots(figsize=(6, 6))
        ax.imshow(canvas, interpolation="nearest")
        for i in range(1, side):
            ax.axhline(2 * i * h - 0.5, color="white", lw=2)
            ax.axvline(2 * i * w - 0.5, color="white", lw=2)
        ax.axis("off")
        ax.set_title(f"{Path(manifest).parent.name}: 2x2 blocks, main prompt top left, three fillers")
        with atomic_path(Path(out_png).with_suffix(".pdf"), suffix=".pdf") as tmp:
            fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "Producer": None})
        plt.close(fig)
    return pd.DataFrame(rows)


def compare_models(manifests: dict[str, str | os.PathLike], side_png: str | os.PathLike, diff_png: str | os.PathLike,
                   n: int = 8, reference: str = "teacher", split: str = "eval") -> tuple[Figure, Figure]:
    """Side-by-side images and difference maps of the same ``n`` prompts."""
    return side_by_side(manifests, side_png, n, split), difference_maps(manifests, diff_png, reference, n, split)
