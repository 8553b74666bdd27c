import numpy as np
import pytest

from kd_core.world.render import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, render


def _arr(attrs, rng=None):
    return np.asarray(render(attrs, 32, rng)).astype(int)


def test_colours_and_background_are_drawn():
    for colour, rgb in COLOURS.items():
        for bg, bg_rgb in BACKGROUNDS.items():
            a = _arr({"colour": colour, "background": bg, "size": "large", "shape": "square"})
            assert np.abs(a[16, 16] - np.array(rgb)).max() <= 2  # centre pixel: the shape
            assert np.abs(a[1, 1] - np.array(bg_rgb)).max() <= 2  # corner: the background


def test_position_moves_the_shape():
    xs = {}
    for pos in POSITIONS:
        a = _arr({"position": pos, "background": "black", "colour": "yellow", "size": "small"})
        mask = a.sum(-1) > 200
        xs[pos] = np.nonzero(mask)[1].mean()
    assert xs["left"] < 12 < xs["centre"] < 20 < xs["right"]


def test_size_and_shape_change_the_area():
    area = lambda **a: (_arr({"background": "black", **a}).sum(-1) > 150).sum()  # noqa: E731
    assert area(size="large", shape="circle") > 2.5 * area(size="small", shape="circle")
    areas = {s: area(size="large", shape=s) for s in SHAPES}
    assert len(set(areas.values())) == 4
    assert min(areas, key=areas.get) == "triangle" and max(areas, key=areas.get) == "circle"


def test_jitter_is_seeded():
    a = _arr({}, np.random.default_rng(1))
    b = _arr({}, np.random.default_rng(1))
    c = _arr({}, np.random.default_rng(2))
    assert (a == b).all() and (a != c).any()


def test_unknown_attribute_value_is_rejected():
    with pytest.raises(ValueError, match="unknown colour 'teal'"):
        render({"colour": "teal"})
