"""The experiment plan from the validated configs, without Snakemake and without torch."""

import subprocess
import sys

import pytest
import yaml

from kd_core.experiment import validate_experiment
from kd_core.plan import Plan
from kd_core.studies.dmkd import guidance_tag
from kd_core.studies.size_study import width_student_name

from .conftest import ROOT


def plan_of(name: str, **changes) -> Plan:
    cfg = yaml.safe_load((ROOT / "config" / name).read_text())
    for dotted, value in changes.items():
        cfg = _with(cfg, dotted, value)
    return Plan(validate_experiment(cfg, ROOT / "config" / "schema.yaml"))


def test_names():
    assert [width_student_name(f) for f in (0.25, 0.5, 1.0, 0.01)] == ["w0p25", "w0p5", "w1", "w0p01"]
    assert [guidance_tag(g) for g in (2.0, 7.5)] == ["g2", "g7p5"]


def test_smoke_plan():
    plan = plan_of("smoke.yaml")
    assert plan.out == "results/smoke"
    assert plan.models == ["teacher", "base_student", "lora_student", "bk_small", "bk_small_nofeat", "w0p5", "w1"]
    size, dmkd = plan.study("size_study"), plan.study("dmkd")
    assert size.factors == {"w0p5": 0.5, "w1": 1.0} and plan.study("block_kd").models == ["bk_small", "bk_small_nofeat"]
    assert plan.model_entry("w0p5") == {"source": "results/smoke/models/w0p5", "splits": ["eval"],
                                        "generation": plan.config["models"]["teacher"]["generation"]}
    assert plan.model_entry("lora_student")["generation"]["lora"] == "results/smoke/models/lora_student"
    assert plan.model_dir("toy:teacher") == "results/smoke/models/toy_teacher" and plan.teacher_source == plan.model_dir("toy:teacher")
    assert plan.grid_models == ["teacher", "base_student", "lora_student"]  # eval and filler images
    # DM-KD: the real-data student, each set with KD and hard labels, the 50% share; every run per seed
    assert list(dmkd.runs) == ["real_ce", "g2_kd", "g2_ce", "g2_f50_kd", "g2_f50_ce"]
    assert dmkd.runs["g2_f50_kd"] == {"data": "g2", "fraction": 0.5, "objective": "kd", "guidance": 2.0,
                                      "baseline": "g2_f50_ce"}
    assert len(dmkd.jobs) == 10 and dmkd.job("g2_kd_s1")["seed"] == 1
    assert dmkd.data("real_ce_s0") == "real"
    assert dmkd.data("g2_kd_s0") == "results/smoke/dmkd/synthetic/g2/manifest.parquet"
    assert set(dmkd.student_inputs("g2_kd_s0")) == {"real", "synthetic", "teacher"}
    assert "teacher" not in dmkd.student_inputs("g2_ce_s0")
    assert plan.study("block_kd").training_data() == "results/smoke/images/teacher/train.parquet"
    targets = plan.all_targets()
    assert len(targets) == len(set(targets)) and "results/smoke/paper/summary.md" in targets
    assert set(plan.metric_tables()) >= {"pairwise", "summary", "dmkd", "size_study", "timestep_mse"}
    assert set(plan.paper_figures()) >= {size.figure_titles["size_heatmap"], dmkd.figure_titles["dmkd_accuracy"],
                                         "2x2 prompt/filler grid: lora_student"}
    assert set(plan.loss_tables()) == {"toy vae", "toy teacher", "toy student", "LoRA", "BK-SDM bk_small",
                                       "BK-SDM bk_small_nofeat", "width w0p5", "width w1"}


def test_disabled_studies_plan_nothing():
    plan = plan_of("smoke.yaml", **{"lora.enabled": False, "block_kd.enabled": False, "size_study.enabled": False,
                                    "dmkd.enabled": False})
    assert plan.models == ["teacher", "base_student"] and plan.enabled == []
    assert plan.loss_tables() == {"toy vae": "results/smoke/train/toy/vae/loss.parquet",
                                  "toy teacher": "results/smoke/train/toy/teacher/loss.parquet",
                                  "toy student": "results/smoke/train/toy/student/loss.parquet"}
    assert set(plan.metric_tables()) == {"pairwise", "summary", "distribution", "attribute_accuracy", "efficiency"}
    # a disabled study's wildcards match no file's name
    assert {k: v for k, v in plan.wildcard_constraints().items()} == {
        "bk": "block_kd_off", "width_student": "size_study_off", "dmkd_set": "dmkd_off", "dmkd_run": "dmkd_off"}
    assert not any("dmkd" in t or "size_" in t for t in plan.all_targets())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "tiny.yaml"])
def test_every_figure_has_a_title_and_names_are_unique(name):
    plan = plan_of(name)
    assert len(plan.models) == len(set(plan.models))
    assert len(plan.paper_figures()) == len([f for f in plan.figure_targets() + plan.comparison_targets() if f.endswith(".png")])


def test_planning_imports_no_torch():
    code = ("import sys, yaml; from kd_core.experiment import validate_experiment; from kd_core.plan import Plan; "
            f"Plan(validate_experiment(yaml.safe_load(open({str(ROOT / 'config' / 'config.yaml')!r})), "
            f"{str(ROOT / 'config' / 'schema.yaml')!r})).all_targets(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _leaves(node, prefix=()):
    """(dotted path, value) of every scalar or list in a config section."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*prefix, k))
    else:
        yield ".".join(prefix), node


def _other(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return [*value, value[-1]] if value else [1]
    return f"{value}_x" if isinstance(value, str) else 1


# job params builder -> (config section it draws from, the dataclasses whose fields it may hold)
PARAMS = {
    "lora": ("lora", lambda p: p.study("lora").train_params(), ["kd_core.captions:DataConfig", "kd_core.train.lora:LoRAConfig"]),
    "block_kd": ("block_kd", lambda p: p.study("block_kd").train_params(),
                 ["kd_core.captions:DataConfig", "kd_core.train.block_kd:BlockKDConfig"]),
    "size_study": ("size_study", lambda p: p.study("size_study").train_params(),
                   ["kd_core.captions:DataConfig", "kd_core.train.size_study:SizeStudyConfig"]),
    # one job per split, each reading its own count only
    "world_data[train]": ("world", lambda p: p.world_data_params("train"), ["kd_core.world.dataset:WorldDataConfig"]),
    "world_data[test]": ("world", lambda p: p.world_data_params("test"), ["kd_core.world.dataset:WorldDataConfig"]),
}
UNREAD = {"world_data[train]": {"n_test"}, "world_data[test]": {"n_train"}}


@pytest.mark.parametrize("job", PARAMS)
def test_a_job_s_params_change_only_with_what_its_function_reads(job):
    """Every setting of the job's config section, changed in turn: its params change exactly when the
    setting is a field of a dataclass the job's kd_core function takes (or its TrainConfig's)."""
    import dataclasses
    import importlib

    from kd_core.config import declared_fields

    section, params, classes = PARAMS[job]
    fields = set()
    for path in [*classes, "kd_core.train.loop:TrainConfig"]:
        module, name = path.split(":")
        real = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
        assert declared_fields(path) == real, path  # read from the source as the classes define them
        fields |= real
    base = plan_of("smoke.yaml")
    before = params(base)
    for key, value in _leaves(base.config[section]):
        if key in ("enabled", "data"):  # the study itself, and its data source (a path): other checks
            continue
        changed = params(Plan(_with(base.config, f"{section}.{key}", _other(value))))
        top, *rest = key.split(".")
        reads = (top == "train" and rest[0] in fields) or (top != "train" and top in fields - UNREAD.get(job, set()))
        assert (changed != before) == reads, (job, key)


def _with(config, dotted, value):
    """A copy of ``config`` with the dotted key set (missing sections made)."""
    import copy

    cfg = copy.deepcopy(config)
    node = cfg
    *parents, leaf = dotted.split(".")
    for k in parents:
        node = node.setdefault(k, {})
    node[leaf] = value
    return cfg


def test_prompt_and_generation_params_leave_out_what_they_do_not_read():
    plan = plan_of("smoke.yaml")
    assert plan.prompt_params("train") == {"seed": 0, "grammar": "shapes", "n_train": 6, "seeds_per_prompt": 1,
                                           "negative_prompt": None}
    assert "n_eval" in plan.prompt_params("eval") and "n_eval" not in plan.prompt_params("filler")
    assert "batch_size" not in plan.generation_params("teacher")
    assert plan.generation_runtime("teacher") == {"batch_size": 4}
    assert plan.generation_runtime("lora_student") == {"batch_size": 4}  # its base student's


def test_width_students_of_the_other_initialisation(root):
    """size_study.compare_init: each width again from the other initialisation, named w<factor>_<init>,
    a model like every other; the size analyses keep to the study's own students."""
    from kd_core.experiment import validate_experiment
    from kd_core.plan import Plan

    schema = root / "config" / "schema.yaml"
    cfg = validate_experiment({"size_study": {"enabled": True, "factors": [0.5, 1.0], "compare_init": True}}, schema)
    plan = Plan(cfg)
    size = plan.study("size_study")
    assert list(size.factors) == ["w0p5", "w1"] and list(size.compared) == ["w0p5_random", "w1_random"]
    assert plan.models[-4:] == ["w0p5", "w1", "w0p5_random", "w1_random"]
    assert [size.init(m) for m in size.models] == ["teacher", "teacher", "random", "random"]
    assert size.factor("w0p5_random") == 0.5
    assert plan.model_entry("w1_random")["source"].endswith("/models/w1_random")
    assert list(size.student_dirs()) == ["w0p5", "w1"]  # the analyses: the study's own students
    random_first = Plan(validate_experiment({"size_study": {"enabled": True, "factors": [0.5], "init": "random",
                                                            "compare_init": True}}, schema)).study("size_study")
    assert list(random_first.compared) == ["w0p5_teacher"] and random_first.init("w0p5") == "random"
    assert Plan(validate_experiment({"size_study": {"enabled": True}}, schema)).study("size_study").compared == {}
