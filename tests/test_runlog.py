import re
import time

from kd_core.runlog import RESOURCES, job


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
