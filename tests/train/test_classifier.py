from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from kd_core.errors import KDError
from kd_core.image_folder import LabelledImages, split_validation
from kd_core.train.classifier import (
    CLASSIFIER_TRAIN,
    ClassifierConfig,
    ClassifierModelConfig,
    build_classifier,
    kd_loss,
    load_classifier_model,
    logits_of,
    preprocess,
    train_classifier,
)
from kd_core.world.render import render

SHAPES = ["circle", "square"]


def shapes_data(n_per_class: int, seed: int) -> LabelledImages:
    """Rendered shapes (random colour, size, position, background), labelled by shape."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, shape in enumerate(SHAPES):
        for _ in range(n_per_class):
            attrs = {"shape": shape, "colour": rng.choice(["red", "blue", "green"]), "background": rng.choice(["white", "black"])}
            images.append(np.asarray(render(attrs, 32, rng)))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return LabelledImages(x, torch.tensor(labels), SHAPES)


SMALL = ClassifierModelConfig(embedding_size=8, hidden_sizes=(8, 16), depths=(1, 1))


def config(objective="ce", **kw):
    return replace(ClassifierConfig(), objective=objective, model=SMALL, **kw)


def train_config(epochs=6):
    return replace(CLASSIFIER_TRAIN, epochs=epochs, batch_size=16, lr=0.003, optimizer="adamw", checkpoint_every=1000,
                   device="cpu")


def predictions(folder):
    return pd.read_parquet(folder / "pred.parquet")


def test_kd_loss_is_hintons_term():
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    assert kd_loss(t, t, 10.0).item() == pytest.approx(0.0, abs=1e-6)
    p_t = F.softmax(t / 4, -1)
    manual = (p_t * (p_t.log() - F.log_softmax(s / 4, -1))).sum(-1).mean() * 16
    assert kd_loss(s, t, 4.0).item() == pytest.approx(manual.item(), rel=1e-5)
    assert kd_loss(s, t, 4.0) > 0


def test_validation_split_is_stratified_disjoint_and_seeded():
    data = LabelledImages(torch.arange(40).view(40, 1, 1, 1).expand(40, 3, 2, 2).to(torch.uint8),
                          torch.tensor([0] * 30 + [1] * 10), ["a", "b"])
    train, val = split_validation(data, 0.2, seed=3)
    assert len(val) == 8 and val.labels.tolist().count(1) == 2 and len(train) == 32
    assert not set(train.images[:, 0, 0, 0].tolist()) & set(val.images[:, 0, 0, 0].tolist())
    assert torch.equal(split_validation(data, 0.2, seed=3)[1].images, val.images)


def test_preprocess_normalises_and_augments_deterministically():
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    plain = preprocess(x, 16)
    assert plain.shape == (4, 3, 16, 16) and plain.dtype == torch.float32
    a = preprocess(x, 24, torch.Generator().manual_seed(1), pad=2, flip=True)
    b = preprocess(x, 24, torch.Generator().manual_seed(1), pad=2, flip=True)
    assert a.shape == (4, 3, 24, 24) and torch.equal(a, b) and not torch.equal(preprocess(x, 24), a)
    flat = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    flat[:, :, :, 8:] = 255
    blurred = preprocess(flat, 16, torch.Generator().manual_seed(0), blur=1.0)
    assert 0 < blurred[0, 0, 8, 7] - preprocess(flat, 16)[0, 0, 8, 7]  # the edge is softened
    assert torch.equal(blurred[:, :, :, :4], preprocess(flat, 16)[:, :, :, :4])  # flat regions stay flat
    noisy = preprocess(flat, 16, torch.Generator().manual_seed(0), noise=0.1)
    assert 0 < (noisy - preprocess(flat, 16)).std() < 1.0


def test_teacher_learns_saves_and_a_kd_student_follows_it(tmp_path):
    train, test = shapes_data(40, 0), shapes_data(20, 1)
    result = train_classifier(train, test, tmp_path / "t" / "model", tmp_path / "t" / "train", tmp_path / "t" / "pred.parquet",
                              config(), train_config(30), name="teacher")
    pred = predictions(tmp_path / "t")
    assert result.steps > 0 and result.best_val is not None
    assert pred["correct"].mean() >= 0.9 and len(pred) == 40
    teacher = load_classifier_model(tmp_path / "t" / "model")  # transformers from_pretrained, safetensors
    assert (tmp_path / "t" / "model" / "model.safetensors").is_file()
    assert teacher.config.id2label == {0: "circle", 1: "square"}
    assert (logits_of(teacher, test.images, 32).argmax(-1) == test.labels).float().mean() == pytest.approx(pred["correct"].mean())
    loss = pd.read_parquet(tmp_path / "t" / "train" / "loss.parquet")
    assert {("val", "accuracy"), ("test", "accuracy"), ("val", "loss"), ("train", "task")} <= set(zip(loss["split"], loss["term"], strict=True))
    # the student sees only its own images; labels are ignored by a pure KD objective (a seeded
    # permutation: the validation accuracy that picks the best epoch still reads these labels)
    shuffled = LabelledImages(train.images, train.labels[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))],
                              SHAPES)
    train_classifier(shuffled, test, tmp_path / "s" / "model", tmp_path / "s" / "train", tmp_path / "s" / "pred.parquet",
                     config("kd", temperature=4.0), train_config(30), teacher=teacher, name="student")
    train_classifier(shuffled, test, tmp_path / "h" / "model", tmp_path / "h" / "train", tmp_path / "h" / "pred.parquet",
                     config("ce"), train_config(30), name="hard")
    kd, hard = predictions(tmp_path / "s"), predictions(tmp_path / "h")
    assert kd["correct"].mean() >= 0.85 and hard["correct"].mean() < 0.75, (kd["correct"].mean(), hard["correct"].mean())
    terms = set(pd.read_parquet(tmp_path / "s" / "train" / "loss.parquet")["term"])
    assert {"out_kd", "task", "out_kd_weighted", "task_weighted"} <= terms


def test_bad_runs_get_one_line(tmp_path):
    data = shapes_data(4, 0)
    args = (data, data, tmp_path / "m", tmp_path / "t", tmp_path / "p.parquet")
    with pytest.raises(KDError, match="objective kd needs a teacher"):
        train_classifier(*args, config("kd"), train_config())
    one = LabelledImages(data.images[:1], data.labels[:1], SHAPES)
    with pytest.raises(KDError, match="0 validation images are too few"):
        train_classifier(one, data, *args[2:], config("ce"), train_config())
    other = LabelledImages(data.images, data.labels, ["a", "b"])
    with pytest.raises(KDError, match="differ from the test classes"):
        train_classifier(data, other, *args[2:], config("ce"), train_config())
    with pytest.raises(KDError, match="cannot load the classifier"):
        build_classifier(ClassifierModelConfig(source=str(tmp_path / "nothing")), SHAPES)


def test_the_kept_epoch_is_chosen_on_the_validation_split_never_on_the_test_split(tmp_path):
    """The real test labels inverted: choosing by test accuracy would keep the worst epoch. The kept
    model is the best-validated one (highest validation accuracy, ties to the lower validation loss),
    and its test predictions are those logged at that step."""
    train, test = shapes_data(24, 0), shapes_data(10, 1)
    inverted = LabelledImages(test.images, 1 - test.labels, SHAPES)
    cfg, train_cfg = config(), train_config(8)
    result = train_classifier(train, inverted, tmp_path / "model", tmp_path / "train", tmp_path / "pred.parquet",
                              cfg, train_cfg, name="student")
    loss = pd.read_parquet(tmp_path / "train" / "loss.parquet")
    val = loss.query("split == 'val'").pivot_table(index="step", columns="term", values="value")
    test_acc = loss.query("split == 'test' and term == 'accuracy'").set_index("step")["value"]
    best = val.sort_values(["accuracy", "loss"], ascending=[False, True]).index[0]
    assert result.best_step == best and result.best_val == pytest.approx(val.loc[best, "accuracy"])
    assert test_acc.loc[best] < test_acc.max()  # the test split would have chosen another epoch
    # the kept model, scored here on the validation split the run drew: the accuracy it was chosen by
    _, held_out = split_validation(train, cfg.val_fraction, train_cfg.seed)
    kept = load_classifier_model(tmp_path / "model")
    assert result.best_val == pytest.approx(float((logits_of(kept, held_out.images, 32).argmax(-1) == held_out.labels).float().mean()))
    assert predictions(tmp_path)["correct"].mean() == pytest.approx(test_acc.loc[best])
