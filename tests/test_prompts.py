import pandas as pd
import pytest

from kd_core.errors import ConfigError
from kd_core.io import read_metadata
from kd_core.models.tokenizer import build_clip_tokenizer
from kd_core.prompts import (
    PROMPT_SCHEMA,
    PromptConfig,
    iter_words,
    load_grammar,
    split_fields,
    synthesize_prompts,
    synthesize_split,
    write_prompt_tables,
)


@pytest.mark.parametrize("grammar,filler", [("shapes", "shapes"), ("dogs", "artistic"), ("artistic", "artistic")])
def test_splits_disjoint_unique_and_deterministic(grammar, filler):
    cfg = PromptConfig(grammar=grammar, filler_grammar=filler, n_train=40, n_eval=10, n_filler=12, seed=3)
    a, b = synthesize_prompts(cfg), synthesize_prompts(cfg)
    for split in a:
        pd.testing.assert_frame_equal(a[split], b[split])
        assert list(a[split].columns[: len(PROMPT_SCHEMA)]) == PROMPT_SCHEMA.names
        assert a[split]["prompt"].is_unique and a[split]["prompt_id"].is_unique
        assert (a[split]["split"] == split).all()
    assert (len(a["train"]), len(a["eval"]), len(a["filler"])) == (40, 10, 12)
    sets = [set(a[s]["prompt"]) for s in ("train", "eval", "filler")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    other = synthesize_prompts(PromptConfig(grammar=grammar, filler_grammar=filler, n_train=40, n_eval=10, n_filler=12, seed=4))
    assert list(other["train"]["prompt"]) != list(a["train"]["prompt"])


# Each field changed to another valid value; a split must stay equal unless split_fields names it.
_EDITS = {"grammar": "artistic", "filler_grammar": "artistic", "n_train": 50, "n_eval": 14, "n_filler": 9,
          "seeds_per_prompt": 2, "negative_prompt": "blurry", "seed": 7}


@pytest.mark.parametrize("grammar,filler", [("shapes", "shapes"), ("dogs", "artistic")])
@pytest.mark.parametrize("split", ["train", "eval", "filler"])
def test_a_split_changes_exactly_with_the_fields_it_depends_on(grammar, filler, split):
    """What rerun decisions rest on: the prompts rule's params for a split are split_fields, so an edit
    to any other field must leave that split's table as it was, and an edit to one of them changes it."""
    base = PromptConfig(grammar=grammar, filler_grammar=filler, n_train=40, n_eval=10, n_filler=12, seed=3)
    table = synthesize_split(base, split)
    depends = {"seed", *split_fields(base, split)}
    for field, value in _EDITS.items():
        edited = PromptConfig(**{**base.__dict__, field: value})
        if field in ("grammar", "filler_grammar") and value == getattr(base, field):
            continue
        same = synthesize_split(edited, split).equals(table)
        if field not in depends:
            assert same, (split, field)
        elif not (split == "filler" and field in ("n_train", "n_eval")):  # there: only if the grammars share prompts
            assert not same, (split, field)
    assert {"n_eval", "n_filler"}.isdisjoint(split_fields(base, "train"))
    assert ("n_eval" in split_fields(base, "filler")) == (grammar != filler)


def test_attribute_columns_are_ground_truth():
    t = synthesize_prompts(PromptConfig(n_train=30, n_eval=5, n_filler=5))["train"]
    for r in t.itertuples():
        assert r.prompt == f"a {r.size} {r.colour} {r.shape} at the {r.position} on a {r.background} background"
    dogs = synthesize_prompts(PromptConfig(grammar="dogs", filler_grammar="artistic", n_train=5, n_eval=2, n_filler=7))
    assert {"breed", "pose", "environment", "lighting"} <= set(dogs["train"].columns)
    assert dogs["filler"]["category"].notna().all()
    assert dogs["train"]["negative_prompt"].str.contains("blurry").all()


def test_seeds_per_prompt_gives_distinct_seeds():
    t = synthesize_prompts(PromptConfig(n_train=5, n_eval=2, n_filler=0, seeds_per_prompt=3))["train"]
    assert len(t) == 15
    assert t.groupby("prompt_id")["seed"].nunique().eq(3).all()


def test_too_many_prompts_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"prompts.n_train \+ prompts.n_eval = 500 exceeds the 432"):
        synthesize_prompts(PromptConfig(n_train=450, n_eval=50))


def test_unknown_grammar_names_the_builtins(tmp_path):
    with pytest.raises(ConfigError, match="built-in grammars: .*dogs"):
        load_grammar("cats")
    bad = tmp_path / "g.yaml"
    bad.write_text("name: g\ntemplates:\n  - template: 'a {thing}'\n")
    with pytest.raises(ConfigError, match="undefined slot"):
        load_grammar(str(bad))


def test_grammar_sizes_cover_the_studies():
    assert load_grammar("dogs").size == 20 * 10 * 12 * 8
    cats = {t.category for t in load_grammar("artistic").templates}
    assert cats == {"animal", "landscape", "object", "cityscape", "nature", "space", "abstract"}


def test_written_tables_carry_schema_and_provenance(tmp_path):
    paths = {s: tmp_path / f"{s}.parquet" for s in ("train", "eval", "filler")}
    write_prompt_tables(PromptConfig(n_train=4, n_eval=2, n_filler=2), paths, {"code_hash": "abc"})
    df = pd.read_parquet(paths["eval"])
    assert len(df) == 2 and df["seed"].dtype == "int64"
    meta = read_metadata(paths["eval"])
    assert meta["code_hash"] == "abc" and meta["config"]["n_eval"] == 2
    assert "n_eval" not in read_metadata(paths["train"])["config"]  # what the train table depends on only


def test_every_grammar_word_is_one_token():
    words = sorted(set(iter_words(["shapes", "dogs", "artistic"])))
    assert len(words) > 30 and {"circle", "square", "background"} <= set(words)
    tok = build_clip_tokenizer(words, 16)
    assert all(tok.tokenize(w) == [w + "</w>"] for w in words)
    ids = [tok.convert_tokens_to_ids(w + "</w>") for w in words]
    assert len(set(ids)) == len(words) and tok.unk_token_id not in ids  # one distinct token per word
    pieces = tok.tokenize("zebra")  # an unknown word still tokenizes, into pieces that spell it
    assert len(pieces) > 1 and "".join(pieces) == "zebra</w>"


def test_unconditional_tables_are_samples_named_by_seed():
    """grammar None: n_<split> rows each, an empty prompt and a distinct seed per row; a split's table
    depends on its own count only."""
    cfg = PromptConfig(grammar=None, n_train=50, n_eval=20, n_filler=0, seed=3)
    tables = synthesize_prompts(cfg)
    assert [len(tables[s]) for s in ("train", "eval", "filler")] == [50, 20, 0]
    train, ev = tables["train"], tables["eval"]
    assert set(train["prompt"]) == {""} and set(train["grammar"]) == {"unconditional"}
    assert train["prompt_id"].is_unique and train["seed"].is_unique and not set(train["seed"]) & set(ev["seed"])
    assert list(train.columns) == PROMPT_SCHEMA.names
    assert split_fields(cfg, "eval") == ("grammar", "n_eval", "seeds_per_prompt")
    more = synthesize_split(PromptConfig(grammar=None, n_train=80, n_eval=20, n_filler=0, seed=3), "eval")
    pd.testing.assert_frame_equal(more, ev)
    grown = synthesize_split(PromptConfig(grammar=None, n_train=80, n_eval=20, n_filler=0, seed=3), "train")
    pd.testing.assert_frame_equal(grown.iloc[:50], train)  # more samples extend the table
