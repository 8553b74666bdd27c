import numpy as np
import pytest
from PIL import Image

from kd_core.errors import KDError
from kd_core.image_folder import read_uint8, scan_image_folder


def make_folder(root, classes=("cat", "dog"), per_class=3, size=8):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((size, size, 3), 40 * c + i, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_scan_lists_every_image_with_its_label(tmp_path):
    folder = scan_image_folder(make_folder(tmp_path / "f"))
    assert folder.classes == ["cat", "dog"] and folder.labels == [0, 0, 0, 1, 1, 1] and folder.size == (8, 8)
    x = read_uint8(folder.files)
    assert x.shape == (6, 3, 8, 8) and x.dtype.is_floating_point is False and int(x[4, 0, 0, 0]) == 41
    assert read_uint8(folder.files[:1], 4).shape == (1, 3, 4, 4)
    # a given class order is kept
    assert scan_image_folder(tmp_path / "f", ["dog", "cat"]).labels == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("problem,message", [
    ("missing", "does not exist"),
    ("no classes", "has no class sub-folders"),
    ("empty class", "holds no images"),
    ("unreadable", "unreadable image"),
    ("mixed sizes", "mixes image sizes"),
    ("unknown class", "lacks the class folder(s) ['bird']"),
])
def test_bad_folders_get_one_line(tmp_path, problem, message):
    root = tmp_path / "f"
    classes = None
    if problem == "no classes":
        root.mkdir()
    elif problem != "missing":
        make_folder(root)
    if problem == "empty class":
        (root / "bird").mkdir()
    if problem == "unreadable":
        (root / "cat" / "broken.png").write_bytes(b"not a png")
    if problem == "mixed sizes":
        Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "dog" / "big.png")
    if problem == "unknown class":
        classes = ["cat", "bird"]
    with pytest.raises(KDError) as info:
        scan_image_folder(root, classes)
    assert message in str(info.value) and "\n" not in str(info.value)
