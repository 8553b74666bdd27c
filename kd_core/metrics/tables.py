"""The per-image metric table shared by pairwise and alignment metrics, and the gather step that
joins per-model tables into one. Kept free of metric code, so that editing one metric does not
rerun the others."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from kd_core.io import read_metadata, write_parquet

#: One row per image and metric; ``reference`` is what the image was compared with (the teacher
#: model for pairwise metrics, the CLIP model for CLIP score).
PER_IMAGE_SCHEMA = pa.schema([
    ("model", pa.string()), ("reference", pa.string()), ("prompt_id", pa.string()), ("seed", pa.int64()),
    ("split", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
])


def gather_tables(paths: list[str | Path], out_path: str | Path, schema: pa.Schema, name: str) -> pd.DataFrame:
    """Concatenate per-model tables of one schema into one; the parts' metadata is kept under ``parts``."""
    frames = [pd.read_parquet(p) for p in paths]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=schema.names)
    parts = {Path(p).stem: read_metadata(p) for p in paths}
    write_parquet(out, out_path, schema, name, {"parts": parts})
    return out
