import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("stages", ROOT / "bench" / "stages.py")
stages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stages)

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _job(run, name, wall, bench_cpu, rss, log_cpu=None):
    (run / "benchmarks").mkdir(parents=True, exist_ok=True)
    (run / "benchmarks" / f"{name}.tsv").write_text(HEADER + f"{wall}\t0:00:01\t{rss}\t0\t0\t0\t0\t0\t50\t{bench_cpu}\n")
    if log_cpu is not None:
        (run / "logs").mkdir(exist_ok=True)
        (run / "logs" / f"{name}.log").write_text(f"progress\njob resources: cpu_s={log_cpu} max_rss_mb=12.0\n")


def test_profile_sums_per_rule_and_study_with_the_logs_cpu_time(tmp_path, capsys):
    run = tmp_path / "results" / "x"
    _job(run, "generate_teacher", 40.0, 15.0, 600.0, log_cpu=38.5)  # benchmark CPU cut at its 15 s sample
    _job(run, "generate_w0p5", 10.0, 9.0, 500.0, log_cpu=9.5)
    _job(run, "train_lora", 100.0, 90.0, 700.0)  # no resources line: the benchmark's value
    _job(run, "dmkd_student_kd_g2_s0", 30.0, 29.0, 300.0, log_cpu=29.0)  # a `use rule ... as` twin
    jobs = stages.job_table(run, stages.rule_studies())
    assert dict(zip(jobs["job"], jobs["rule"], strict=True)) == {
        "generate_teacher": "generate", "generate_w0p5": "generate", "train_lora": "train_lora",
        "dmkd_student_kd_g2_s0": "dmkd_student"}
    assert jobs.set_index("job").loc["dmkd_student_kd_g2_s0", "study"] == "dmkd"
    jobs = jobs[jobs["study"] != "dmkd"]
    assert dict(zip(jobs["job"], jobs["cpu_s"], strict=True)) == {
        "generate_teacher": 38.5, "generate_w0p5": 9.5, "train_lora": 90.0}
    by_rule = stages.summarise(jobs, "rule")
    assert by_rule.loc["generate", "wall_s"] == 50.0 and by_rule.loc["generate", "cpu_s"] == 48.0
    assert by_rule.loc["generate", "max_rss_mb"] == 600.0 and by_rule.loc["total", "jobs"] == 3
    assert stages.summarise(jobs, "study").loc["lora", "wall_s"] == 100.0
    assert stages.main([str(run)]) == 0
    assert "| generate" in capsys.readouterr().out


def test_profile_of_a_missing_run_is_one_line(tmp_path, capsys):
    assert stages.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def _entry(stamp, rule, jobid, inputs, outputs, log):
    return (f"[Sun Dec  6 19:{stamp}]\nlocalrule {rule}:\n    input: {', '.join(inputs)}\n"
            f"    output: {', '.join(outputs)}\n    log: {log}\n    jobid: {jobid}\n    reason: x\n")


def _finished(stamp, jobid):
    return f"[Sun Dec  6 19:{stamp}]\nFinished jobid: {jobid} (Rule: x)\n"


def test_critical_path_follows_the_latest_input_and_counts_the_wait_for_a_core():
    # a (0-10) -> b (10-40) -> d (50-60, queued 10 s behind c); c (10-50) also needs a; e needs nothing
    log = "".join([
        _entry("00:00 2026", "data", 1, ["cfg.yaml"], ["r/a.parquet"], "r/logs/data.log"),
        _entry("00:00 2026", "prompts", 5, ["cfg.yaml"], ["r/e.parquet"], "r/logs/prompts.log"),
        _finished("00:02 2026", 5),
        _finished("00:10 2026", 1),
        _entry("00:10 2026", "train", 2, ["r/a.parquet"], ["r/models/b", "r/b_loss.parquet"], "r/logs/train_b.log"),
        _entry("00:10 2026", "train", 3, ["r/a.parquet"], ["r/models/c"], "r/logs/train_c.log"),
        _finished("00:40 2026", 2),
        _finished("00:50 2026", 3),
        _entry("00:50 2026", "generate", 4, ["r/models/b", "r/a.parquet"], ["r/d.parquet"], "r/logs/generate_b.log"),
        _finished("01:00 2026", 4),
        "[Sun Dec  6 19:01:00 2026]\nlocalrule all:\n    input: r/d.parquet\n    jobid: 0\n",
        _finished("01:00 2026", 0),
    ])
    jobs = stages.log_jobs(log)
    assert set(jobs["job"]) == {"data", "prompts", "train_b", "train_c", "generate_b"}
    assert jobs.set_index("job").loc["train_c", "end_s"] == 50.0
    path = stages.critical_path(jobs)
    assert list(path["job"]) == ["data", "train_b", "generate_b"]
    assert list(path["wall_s"]) == [10.0, 30.0, 10.0]
    assert list(path["waited_s"]) == [0.0, 0.0, 10.0]
