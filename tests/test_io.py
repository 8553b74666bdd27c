import pandas as pd
import pyarrow as pa
import pytest

from kd_core.io import atomic_dir, atomic_path, read_metadata, write_parquet

SCHEMA = pa.schema([("a", pa.int64()), ("b", pa.string())])


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_atomic_dir_replaces_whole_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.bin").write_text("stale")
    with atomic_dir(target) as tmp:
        (tmp / "new.bin").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "partial.bin").write_text("x")
        raise ValueError
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_write_parquet_checks_schema_and_keeps_metadata(tmp_path):
    path = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"b": ["x"], "a": [1], "extra": [0.5]}), path, SCHEMA, "t", {"seed": 7})
    df = pd.read_parquet(path)
    assert list(df.columns) == ["a", "b", "extra"]
    assert read_metadata(path) == {"table": "t", "seed": 7}
    with pytest.raises(ValueError, match="lacks required column"):
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "u.parquet", SCHEMA, "u")
    with pytest.raises(ValueError, match="does not match its schema"):
        write_parquet(pd.DataFrame({"a": ["not-a-number"], "b": ["x"]}), tmp_path / "v.parquet", SCHEMA, "v")
    assert not (tmp_path / "u.parquet").exists() and not (tmp_path / "v.parquet").exists()


def test_outputs_get_usual_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "g.txt").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "d" / "g.txt").stat().st_mode) == 0o644


def test_a_killed_writers_temporary_files_go_when_the_output_is_written_again(tmp_path):
    from kd_core.io import atomic_dir, write_text

    (tmp_path / ".table.parquet.x1.parquet").write_text("half")  # what SIGKILL leaves mid-write
    (tmp_path / ".model.abc").mkdir()
    (tmp_path / ".model.abc" / "config.json").write_text("{")
    (tmp_path / ".other.parquet.x2.parquet").write_text("another output's")
    write_text(tmp_path / "table.parquet", "whole")
    with atomic_dir(tmp_path / "model") as d:
        (d / "config.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.parquet.x2.parquet", "model", "table.parquet"]


def test_only_dead_writers_temporaries_are_removed(tmp_path):
    """Two ranks of one job may write the same output at once: a live writer's temporary file (and one
    of another host, whose processes this one cannot see) is kept; a finished process's goes."""
    import os
    import socket
    import subprocess
    import sys

    from kd_core.io import _owner, write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = _owner().split("@", 1)[1]
    assert host and "." not in host and host[:3] == socket.gethostname()[:3].replace(".", "-")
    live, gone = f".t.txt.{os.getpid()}@{host}.a1.txt", f".t.txt.{int(dead.stdout)}@{host}.b2.txt"
    elsewhere = f".t.txt.{int(dead.stdout)}@another-host.c3.txt"
    for name in (live, gone, elsewhere):
        (tmp_path / name).write_text("half")
    write_text(tmp_path / "t.txt", "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live, elsewhere, "t.txt"])
