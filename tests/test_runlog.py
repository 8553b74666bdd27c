import os
import re
import subprocess
import sys
import time

import pytest

from kd_core.runlog import RESOURCES, job

from .conftest import ROOT


def test_job_ends_its_log_with_its_cpu_time_and_peak_memory(tmp_path):
    log = tmp_path / "logs" / "job.log"
    t0 = time.process_time()
    with job(log, 1) as logger:
        logger.info("working")
        x = 0
        while time.process_time() - t0 < 0.3:  # 0.3 s of CPU
            x += 1
        blob = bytearray(64 * 2**20)  # 64 MiB resident
        blob[::4096] = b"x" * len(blob[::4096])
    lines = log.read_text().splitlines()
    assert "working" in lines[0] and lines[-1].startswith(RESOURCES)
    cpu, rss = map(float, re.fullmatch(rf"{RESOURCES} cpu_s=([\d.]+) max_rss_mb=([\d.]+)", lines[-1]).groups())
    assert cpu >= 0.3 and rss >= 64


WRITERS = {  # one output of each kind the workflow writes, too large for the file size limit below
    "parquet table": "write_parquet(pd.DataFrame({'a': np.random.rand(20000)}), out / 't.parquet', pa.schema([('a', pa.float64())]), 't')",
    "PNG image": "save_png(Image.fromarray((np.random.rand(128, 128, 3) * 255).astype('uint8')), out / 'i.png')",
    "JSON file": "write_json(out / 'j.json', {'x': list(range(5000))})",
    "model folder (safetensors)": ("with atomic_dir(out / 'model') as d:\n"
                                   "        save_file({'w': torch.randn(5000)}, str(d / 'model.safetensors'))"),
    "training checkpoint (torch.save)": ("Trainer(torch.nn.Linear(64, 64), lambda m, b, g: {'loss': m(torch.randn(2, 64)).pow(2).mean()}, 8,"
                                         " out / 'run', TrainConfig(max_steps=2, batch_size=2, checkpoint_every=1, device='cpu')).fit()"),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_write_that_fails_for_want_of_room_is_one_line_and_leaves_nothing(tmp_path, kind):
    """A real failed write: the job runs under a 4 KiB file size limit (EFBIG, as ENOSPC on a full disk)."""
    script = f"""
import resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
import numpy as np, pandas as pd, pyarrow as pa, torch
from PIL import Image
from safetensors.torch import save_file
from kd_core.io import atomic_dir, save_png, write_json, write_parquet
from kd_core.runlog import job
from kd_core.train.loop import TrainConfig, Trainer
out = Path(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
with job(None):
    {WRITERS[kind]}
"""
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not re.search(r"\d+/\d+ \[", ln)]  # less progress bars
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nothing half-written was kept" in lines[0], proc.stderr
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no output, no temporary file
