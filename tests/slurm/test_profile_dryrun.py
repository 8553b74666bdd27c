"""profiles/slurm without a cluster: what every real experiment's jobs would ask SLURM for.

Dry runs (snakemake -n --profile profiles/slurm) of each config/experiments/*.yaml, on a PATH
without any SLURM command, as on a machine that only plans the run: each GPU rule's jobs ask for
one GPU with the profile's CPUs, memory, wall time and site settings, the other jobs go to the
CPU partition, figures and the paper stay local. Needs snakemake-executor-plugin-slurm (the dev
extras): Snakemake only accepts `executor: slurm` with it installed.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import yte

from ..conftest import image_folder
from .common import PROFILE, ROOT, SITE_VARS, gpu_rules, printed_jobs

EXPERIMENTS = sorted(p.stem for p in (ROOT / "config" / "experiments").glob("*.yaml"))
SLURM_COMMANDS = ("sbatch", "squeue", "sinfo", "sacct", "scontrol", "scancel", "srun", "salloc", "sacctmgr", "sshare")
SITE = {"KD_SLURM_PARTITION": "cpuq", "KD_SLURM_GPU_PARTITION": "gpuq", "KD_SLURM_ACCOUNT": "kdproj",
        "KD_SLURM_GPU_MODEL": "h100"}
# rules that run on the submitting host, never as SLURM jobs (localrules in rules/figures.smk, rules/report.smk)
LOCAL = {"figure_metrics", "figure_distribution", "figure_attributes", "figure_loss", "figure_efficiency",
         "comparison_models", "comparison_grid", "figure_dmkd", "figure_size_study", "size_study", "paper", "pairwise_gather",
         "alignment_gather", "all"}


def render_profile(env: dict[str, str]) -> dict:
    """profiles/slurm/config.yaml as Snakemake reads it (YTE), under the environment ``env``."""
    old = dict(os.environ)
    try:
        for var in SITE_VARS:
            os.environ.pop(var, None)
        os.environ.update({"KD_SLURM_SITE": os.devnull, **env})  # not the user's own site file
        with open(PROFILE / "config.yaml") as fh:
            return yte.process_yaml(fh, require_use_yte=True)
    finally:
        os.environ.clear()
        os.environ.update(old)


def _path_without_slurm(tmp: Path, fakes: Path | None = None) -> str:
    """A PATH of links to every command on PATH except SLURM's (or, given ``fakes``, with those instead)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            target = bin_dir / entry.name
            if entry.name in SLURM_COMMANDS or target.exists() or not os.access(entry.path, os.X_OK):
                continue
            target.symlink_to(entry.path)
    if fakes is not None:
        for name in SLURM_COMMANDS:  # record the call, fail like a cluster that is down
            script = bin_dir / name
            script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{fakes}"\nexit 1\n')
            script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(bin_dir)


def _config(name: str, tmp: Path) -> Path:
    """config/experiments/<name>.yaml; a dmkd.real or ddpm_teacher.data folder it names but this
    machine lacks is faked (one small image per class: the config check decodes the first)."""
    path = ROOT / "config" / "experiments" / f"{name}.yaml"
    cfg = yaml.safe_load(path.read_text())
    faked = False
    for section, key in (("ddpm_teacher", "data"), ("features", "real_images")):
        where = cfg.get(section) or (cfg.get("metrics") or {}).get(section) or {}
        if where.get(key) and not (ROOT / where[key]).exists():
            image_folder(tmp / section, ["a"])
            where[key] = str(tmp / section)
            faked = True
    if faked:
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    real = (cfg.get("dmkd") or {}).get("real")
    if real and not (ROOT / real).exists():
        for split in ("train", "test"):
            image_folder(tmp / "real" / split, cfg["dmkd"].get("classes") or ["a", "b"])
        cfg["dmkd"]["real"] = str(tmp / "real")
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def dry_run(config: Path, env: dict[str, str], path: str, *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in SITE_VARS}
    # --cores: a real run has none and leaves threads uncapped; a dry run would default to 1
    cmd = [sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/slurm", "--workflow-profile", "none",
           "--cores", "64", "--configfile", str(config), *args]
    # downloads on: the experiments' hub ids are not in this machine's cache (a GPU host would fetch them)
    proc = subprocess.run(cmd, cwd=ROOT, env={**base, "HF_HUB_OFFLINE": "0", **env, "PATH": path,
                                              "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def plugin():
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.fail("snakemake-executor-plugin-slurm is not installed: pip install -e '.[dev]'")


def test_every_gpu_rule_has_its_slurm_resources():
    profile = render_profile({})
    gpu = gpu_rules()
    assert {"generate", "train_lora", "dmkd_student", "efficiency"} <= gpu
    missing = gpu - set(profile["set-resources"])
    assert not missing, f"GPU rules without set-resources in profiles/slurm/config.yaml: {sorted(missing)}"
    for rule, res in profile["set-resources"].items():
        assert {"cpus_per_gpu", "mem_mb", "runtime"} <= set(res), rule
        # generate's GPU comes from its rule (it is the local gather of generate_shard when sharded)
        assert res.get("gpu") == (None if rule == "generate" else 1), rule
    assert profile["executor"] == "slurm" and profile["retries"] >= 1


def test_site_settings_from_environment_or_file(tmp_path):
    bare = render_profile({"KD_SLURM_SITE": str(tmp_path / "absent.yaml")})
    assert set(bare["default-resources"]) == {"runtime", "mem_mb"}  # no partition, account: the plugin's defaults
    assert not {"slurm_partition", "slurm_account", "gpu_model"} & set(bare["set-resources"]["train_lora"])
    site = tmp_path / "slurm.yaml"
    site.write_text("partition: short\naccount: 12345\ngpu_model: a100\n")
    from_file = render_profile({"KD_SLURM_SITE": str(site)})
    assert from_file["default-resources"]["slurm_partition"] == "'short'"
    assert from_file["default-resources"]["slurm_account"] == "'12345'"  # a string to Snakemake, not a number
    lora = from_file["set-resources"]["train_lora"]
    assert lora["slurm_partition"] == "'short'" and lora["gpu_model"] == "'a100'"  # no GPU partition: the CPU one
    both = render_profile({"KD_SLURM_SITE": str(site), "KD_SLURM_GPU_PARTITION": "gpu", "KD_SLURM_ACCOUNT": "proj"})
    assert both["set-resources"]["train_lora"]["slurm_partition"] == "'gpu'"
    assert both["default-resources"] == {"slurm_partition": "'short'", "slurm_account": "'proj'", "runtime": 60,
                                         "mem_mb": 4000}


def declared_local_rules() -> set[str]:
    """Rule names in the `localrules:` directives of the Snakefile and rules/*.smk."""
    names = set()
    for path in (ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))):
        for block in re.findall(r"^\s*localrules:\s*((?:[\s,]*\w+)+)", path.read_text(), flags=re.M):
            names |= set(re.findall(r"\w+", block))
    return names


def test_figures_paper_and_gathers_are_local_rules():
    # `all` needs no directive: a rule without a body never becomes a job
    assert LOCAL - {"all"} <= declared_local_rules()


def _check_jobs(name: str, text: str) -> dict[str, int]:
    """Every job's resources against the profile (site settings SITE); GPU jobs per rule."""
    # a dry run prints every job as `rule` (local or not): local rules are checked above
    jobs = [job for job in printed_jobs(text) if job["rule"] not in LOCAL]
    assert jobs, text[-2000:]
    wanted = render_profile({})["set-resources"]
    gpu = gpu_rules()
    gpu_jobs: dict[str, int] = {}
    for job in jobs:
        rule, res = job["rule"], job["resources"]
        assert res["slurm_account"] == "kdproj" and "runtime" in res and "mem_mb" in res, (rule, res)
        if rule in gpu and not (rule == "generate" and "gpu" not in res):  # generate: the local gather when sharded
            gpu_jobs[rule] = gpu_jobs.get(rule, 0) + 1
            assert res["gpu"] == "1" and res["gpu_model"] == "h100" and res["slurm_partition"] == "gpuq", (rule, res)
            for key in ("cpus_per_gpu", "mem_mb", "runtime"):
                assert res[key] == str(wanted[rule][key]), (rule, key, res[key])
        elif rule != "generate":
            assert "gpu" not in res and res["slurm_partition"] == "cpuq", (rule, res)
        if rule == "efficiency":
            assert job["threads"] == 8 and res["slurm_extra"] == "--exclusive", res
    assert gpu_jobs, f"{name}: no GPU job"
    return gpu_jobs


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_dry_run_asks_slurm_for_gpus(plugin, name, tmp_path):
    # --forceall: every job of the experiment, whatever a local run of it has already made
    proc = dry_run(_config(name, tmp_path), {**SITE, "KD_SLURM_SITE": os.devnull}, _path_without_slurm(tmp_path), "--forceall")
    _check_jobs(name, proc.stdout)


def test_sharded_generation_asks_a_gpu_per_shard(plugin, tmp_path):
    """shards.images = 2: generate_shard jobs get the GPUs; generate, their gather, none."""
    shards = tmp_path / "shards.yaml"
    shards.write_text("shards: {images: 2, metrics: 2}\n")
    proc = dry_run(ROOT / "config" / "smoke.yaml", {**SITE, "KD_SLURM_SITE": os.devnull}, _path_without_slurm(tmp_path),
                   str(shards))  # a second --configfile
    gpu_jobs = _check_jobs("smoke, sharded", proc.stdout)
    assert gpu_jobs["generate_shard"] == 2 * 11 and "generate" not in gpu_jobs  # 11 (model, split) pairs x 2 shards


def test_dry_run_submits_and_queries_nothing(plugin, tmp_path):
    """With SLURM's commands on PATH (fakes that log), a dry run never submits, queries or cancels."""
    calls = tmp_path / "calls.txt"
    proc = dry_run(ROOT / "config" / "smoke.yaml", {**SITE, "KD_SLURM_SITE": os.devnull},
                   _path_without_slurm(tmp_path, fakes=calls))
    assert "This was a dry-run" in proc.stdout
    made = calls.read_text().splitlines() if calls.exists() else []
    # the plugin asks `scontrol show config` for MinJobAge when it is imported (its --help text): nothing else
    assert set(made) <= {"scontrol show config"}, made
    assert shutil.which("sbatch", path=str(tmp_path / "bin"))  # the fakes were on PATH
