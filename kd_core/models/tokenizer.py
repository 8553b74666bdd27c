"""A word-level ``CLIPTokenizer`` written over a grammar's vocabulary.

CLIP's tokenizer is byte-pair encoding with an end-of-word marker ``</w>``. We write merges that
build every vocabulary word from its *end*: ``(d, e</w>) -> de</w>``, ``(i, de</w>) -> ide</w>``...
Because every merge's right-hand side ends a word, no two merges can compete inside a word, so
each grammar word becomes exactly one token, and an unknown word still tokenizes (into suffix
pieces and characters) instead of failing.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CHARS = string.ascii_lowercase + string.digits + ",.-'!?:;()"


def build_clip_tokenizer(words: list[str], max_length: int = 16) -> CLIPTokenizer:
    vocab: list[str] = [BOS, EOS]
    for c in CHARS:
        vocab += [c, c + "</w>"]
    merges: list[tuple[str, str]] = []
    seen = set(vocab)
    for word in sorted(set(w.lower() for w in words)):
        if not word or any(c not in CHARS for c in word):
            continue
        suffix = word[-1] + "</w>"
        for c in reversed(word[:-1]):
            merges.append((c, suffix))
            suffix = c + suffix
            if suffix not in seen:
                seen.add(suffix)
                vocab.append(suffix)
    merges = list(dict.fromkeys(merges))
    with tempfile.TemporaryDirectory() as tmp:
        vf, mf = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vf.write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        mf.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        tok = CLIPTokenizer(str(vf), str(mf), model_max_length=max_length, pad_token=EOS)
    return tok
