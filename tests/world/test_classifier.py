import pandas as pd

from kd_core.world.classifier import (
    AttributeClassifierConfig,
    attribute_accuracy,
    load_classifier,
    predict,
    summarize_accuracy,
    train_attribute_classifier,
)
from kd_core.world.dataset import WorldDataConfig, load_split, make_real_dataset
from kd_core.world.render import DEFAULTS


def test_classifier_learns_and_scores_images(tmp_path):
    table = tmp_path / "data"
    df = make_real_dataset(WorldDataConfig(n_train=512, n_test=128, seed=1), table)
    assert len(df) == 640 and (tmp_path / "data" / df["image"].iloc[0]).is_file()
    acc = train_attribute_classifier(table, tmp_path / "clf", AttributeClassifierConfig(steps=150), list(DEFAULTS), 32)
    # A short run on little data: well above chance on every attribute (full run: >= 99%, see the workflow).
    assert (acc.set_index("attribute")["accuracy"] > 0.8).all(), acc
    clf = load_classifier(tmp_path / "clf")
    test_df, x = load_split(table, "test")
    assert (pd.Series(predict(clf, x)["colour"]) == test_df["colour"]).mean() == acc.set_index("attribute").loc["colour", "accuracy"]

    # Score "generated" images: the held-out real images, through a manifest.
    man = test_df.rename(columns={"image": "file"}).assign(prompt_id=[f"eval-{i:05d}" for i in range(len(test_df))], seed=0, split="eval")
    man.to_parquet(tmp_path / "data" / "manifest.parquet")
    rows = attribute_accuracy(tmp_path / "data" / "manifest.parquet", tmp_path / "clf", tmp_path / "acc.parquet", "real")
    assert set(rows["attribute"]) == set(DEFAULTS) and len(rows) == 5 * len(test_df)
    summary = summarize_accuracy([tmp_path / "acc.parquet"], tmp_path / "summary.parquet")
    s = summary.set_index("attribute")
    assert (s["ci_low"] <= s["accuracy"]).all() and (s["accuracy"] <= s["ci_high"]).all()
    assert abs(s.loc["colour", "accuracy"] - acc.set_index("attribute").loc["colour", "accuracy"]) < 1e-9
