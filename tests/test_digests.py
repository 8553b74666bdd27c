"""Identity by content: digests of files and folders, and their cache."""

import hashlib
import os
import sqlite3

import kd_core.digests as digests
from kd_core.digests import file_digest, tree_digest
from kd_core.sources import fingerprint


def test_a_folder_keeps_its_digest_when_rewritten_with_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CORE_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "w.bin").write_bytes(b"weights")
    (model / "config.json").write_text("{}")
    before = fingerprint(str(model))
    assert before == tree_digest(model) and len(before) == 16
    (model / "unet" / "w.bin").write_bytes(b"weights")  # rewritten: new mtime, same bytes
    os.utime(model / "config.json", ns=(1, 1))
    assert fingerprint(str(model)) == before
    (model / "unet" / "w.bin").write_bytes(b"weightz")  # same size, other bytes
    assert fingerprint(str(model)) != before
    (model / "unet" / "w.bin").write_bytes(b"weights")
    (model / "unet" / "w.bin").rename(model / "unet" / "v.bin")  # a renamed file is another folder
    assert fingerprint(str(model)) != before
    assert fingerprint("org/name") == "org/name" and fingerprint(None) is None


def test_the_cache_is_keyed_by_stat_and_never_serves_old_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CORE_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "a.bin"
    f.write_bytes(b"one")
    assert file_digest(f) == hashlib.sha256(b"one").hexdigest()
    rows = sqlite3.connect(tmp_path / "cache" / "digests.sqlite3").execute("SELECT sha256 FROM digest").fetchall()
    assert rows == [(hashlib.sha256(b"one").hexdigest(),)]  # shared with other processes
    digests._memo.clear()
    calls = []
    monkeypatch.setattr(digests, "_hash", lambda p: calls.append(p) or "x")
    assert file_digest(f) == hashlib.sha256(b"one").hexdigest() and not calls  # from the cache file
    f.write_bytes(b"two")
    assert file_digest(f) == "x" and calls == [f]  # a new stat: read again


def test_an_unwritable_cache_only_costs_time(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("KD_CORE_CACHE", str(tmp_path / "file"))
    digests._memo.clear()
    (tmp_path / "b.bin").write_bytes(b"b")
    assert file_digest(tmp_path / "b.bin") == hashlib.sha256(b"b").hexdigest()
