"""Renderer of shapes-world prompts: shape, colour, size, position and background, with jitter."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 180),
    "orange": (245, 130, 15),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "grey": (128, 128, 128),
}
SIZES: dict[str, float] = {"small": 0.17, "large": 0.27}  # radius as a fraction of the width
POSITIONS: dict[str, float] = {"left": 0.31, "centre": 0.5, "right": 0.69}  # x centre
SHAPES = ("circle", "square", "triangle", "cross")
DEFAULTS = {"size": "large", "colour": "red", "shape": "circle", "position": "centre", "background": "white"}
_SUPERSAMPLE = 4


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in (np.pi / 4 + k * np.pi / 2 for k in range(4))]
        scale = r * 1.0
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-np.pi / 2 + k * 2 * np.pi / 3 for k in range(3))]
        scale = r * 1.1
    elif shape == "cross":
        w = 0.36
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
        scale = r * 0.95
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + scale * (x * c - y * s), cy + scale * (x * s + y * c)) for x, y in pts]


def render(attrs: Mapping[str, str], size: int = 32, rng: np.random.Generator | None = None) -> Image.Image:
    """Draw the image of a shapes prompt's attributes; ``rng`` adds jitter (None: canonical image).

    The corners are always background (the toy VAE relies on it). Jitter: centre +-3% of the width, radius +-8%, rotation +-12 degrees, colour +-12 per channel.
    Attributes not given take :data:`DEFAULTS`.
    """
    a = {**DEFAULTS, **{k: v for k, v in attrs.items() if k in DEFAULTS and v is not None}}
    for key, table in (("colour", COLOURS), ("background", BACKGROUNDS), ("size", SIZES), ("position", POSITIONS)):
        if a[key] not in table:
            raise ValueError(f"unknown {key} {a[key]!r}; known: {sorted(table)}")
    j = (lambda lo, hi: rng.uniform(lo, hi)) if rng is not None else (lambda lo, hi: 0.0)
    S = size * _SUPERSAMPLE
    img = Image.new("RGB", (S, S), BACKGROUNDS[a["background"]])
    draw = ImageDraw.Draw(img)
    cx = (POSITIONS[a["position"]] + j(-0.03, 0.03)) * S
    cy = (0.5 + j(-0.03, 0.03)) * S
    r = SIZES[a["size"]] * (1 + j(-0.08, 0.08)) * S
    colour = tuple(int(np.clip(v + j(-12, 12), 0, 255)) for v in COLOURS[a["colour"]])
    if a["shape"] == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon(_polygon(a["shape"], cx, cy, r, math.radians(j(-12, 12))), fill=colour)
    return img.resize((size, size), Image.Resampling.LANCZOS)
