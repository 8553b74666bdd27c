"""kd_core.models.loading helpers that are not covered through the pipelines' tests."""

import filecmp

from kd_core.models.loading import reset_tokenizers
from kd_core.models.tokenizer import build_clip_tokenizer


def test_a_tokenizer_saves_the_same_file_whether_or_not_it_ran(tmp_path):
    """A fast tokenizer keeps the truncation and padding of its last call and saves them: after
    reset_tokenizers the file is the one a tokenizer that never ran writes (a resumed training saves
    the same model folder as the run that encoded its prompts)."""
    tok = build_clip_tokenizer(["a", "red", "circle"], 16)
    tok.save_pretrained(tmp_path / "fresh")
    tok(["a red circle"], padding="max_length", max_length=16, truncation=True)
    tok.save_pretrained(tmp_path / "used")
    assert not filecmp.cmp(tmp_path / "fresh" / "tokenizer.json", tmp_path / "used" / "tokenizer.json", shallow=False)
    reset_tokenizers(tok)
    tok.save_pretrained(tmp_path / "reset")
    assert filecmp.cmp(tmp_path / "fresh" / "tokenizer.json", tmp_path / "reset" / "tokenizer.json", shallow=False)


def test_a_reloaded_tokenizer_saves_the_same_files_online_or_offline(tmp_path):
    """A tokenizer loaded with local_files_only (what HF_HUB_OFFLINE=1 makes of every load) keeps the
    option and would save it: after reset_tokenizers the folder does not depend on the environment."""
    from transformers import CLIPTokenizer

    build_clip_tokenizer(["a", "red", "circle"], 16).save_pretrained(tmp_path / "base")
    saved = {}
    for offline in (True, False):
        tok = CLIPTokenizer.from_pretrained(tmp_path / "base", local_files_only=offline)
        reset_tokenizers(tok)
        tok.save_pretrained(tmp_path / str(offline))
        saved[offline] = (tmp_path / str(offline) / "tokenizer_config.json").read_text()
    assert saved[True] == saved[False] and "local_files_only" not in saved[True]
