"""The plan and the checks find the studies in the registry and name none of them: a study added
there (here one defined by the test) gets its models, tables, figures, loss curves, wildcards, name
checks and config checks into the plan without another change; one taken out leaves nothing."""

import pytest
import yaml

from kd_core.errors import ConfigError, KDError
from kd_core.experiment import validate_experiment
from kd_core.plan import Plan
from kd_core.studies import STUDIES, Study
from kd_core.studies.base import PaperTable

from ..conftest import ROOT

SCHEMA = ROOT / "config" / "schema.yaml"


class Echo(Study):
    """A study defined here: one student sampled like the teacher, one table, one figure."""

    order = 35
    samples_images = True
    figure_titles = {"echo_figure": "Echo: the figure"}
    paper_tables = {"echo": PaperTable("Echo: the table", lambda df: df)}

    @property
    def models(self):
        return [f"echo_{n}" for n in self.cfg["names"]]

    def model_entry(self, name):
        return self.sampled_like_teacher(name)

    def loss_tables(self):
        return {f"echo {m}": f"{self.out}/train/{m}/loss.parquet" for m in self.models}

    def metric_tables(self):
        return ["echo"]

    def figures(self):
        return ["echo_figure"]

    def wildcards(self):
        return {"echo": "|".join(self.models)}

    def names(self):
        return [("echo.names", self.cfg["names"], lambda n: n.lower())]

    def check(self, folders, grammar):
        if self.cfg.get("refuse"):
            raise ConfigError("config key 'echo.refuse' is true")


Echo.key = "echo"  # set after the class body: the test's study stays out of the registry


SMOKE = validate_experiment(yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text()), SCHEMA)


def _config(**echo):
    return SMOKE | {"echo": {"enabled": True, "names": ["a", "b"], **echo}}


def test_a_registered_study_is_planned_without_naming_it(monkeypatch):
    monkeypatch.setitem(STUDIES, "echo", Echo)
    plan = Plan(_config())
    assert plan.study("echo") in plan.enabled
    # its models come after those of the studies ordered before it (size_study: 30), and are sampled like every model
    assert plan.models[-2:] == ["echo_a", "echo_b"] and plan.models.index("echo_a") > plan.models.index("w1")
    assert plan.model_entry("echo_a")["source"] == "results/smoke/models/echo_a"
    assert "results/smoke/images/echo_b/eval.parquet" in plan.all_targets()
    assert plan.metric_tables()["echo"] == "results/smoke/metrics/echo.parquet"
    assert plan.paper_figures()["Echo: the figure"] == "results/smoke/figures/echo_figure.png"
    assert plan.loss_tables()["echo echo_a"] == "results/smoke/train/echo_a/loss.parquet"
    assert plan.wildcard_constraints()["echo"] == "echo_a|echo_b"
    with pytest.raises(KDError, match="config key 'echo.names' has 'a' and 'A'"):
        Plan(_config(names=["a", "A"])).check_names()
    # disabled: nothing of it, and its wildcard matches no file
    off = Plan(_config(enabled=False))
    assert not any("echo" in t for t in off.all_targets()) and off.wildcard_constraints()["echo"] == "echo_off"


def test_the_config_checks_run_each_enabled_study_s_own(monkeypatch):
    """validate_experiment runs a registered study's check (the schema knows no 'echo' section, so the
    check is reached through a validation that lets the section through)."""
    import kd_core.experiment as experiment

    monkeypatch.setitem(STUDIES, "echo", Echo)
    real_validate = experiment.validate_config

    def validate(config, schema):
        return real_validate({k: v for k, v in config.items() if k != "echo"}, schema) | {"echo": config["echo"]}

    monkeypatch.setattr(experiment, "validate_config", validate)
    cfg = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    with pytest.raises(ConfigError, match="config key 'echo.refuse' is true"):
        validate_experiment(cfg | {"echo": {"enabled": True, "names": ["a"], "refuse": True}}, SCHEMA)
    assert validate_experiment(cfg | {"echo": {"enabled": True, "names": ["a"]}}, SCHEMA)["echo"]["names"] == ["a"]
    # an image-sampling study with evaluate_images off is refused by the shared check, naming it
    with pytest.raises(ConfigError, match="config key 'echo.enabled' is true but 'evaluate_images' is false"):
        validate_experiment(cfg | {"evaluate_images": False, "lora": {"enabled": False}, "block_kd": {"enabled": False},
                                   "size_study": {"enabled": False}, "echo": {"enabled": True, "names": ["a"]}}, SCHEMA)


def test_a_study_taken_out_of_the_registry_leaves_nothing(monkeypatch):
    monkeypatch.delitem(STUDIES, "dmkd")
    plan = Plan(SMOKE)
    assert "dmkd" not in plan.metric_tables() and not any("dmkd" in t for t in plan.all_targets())


def test_every_study_has_a_rules_file_a_schema_section_and_titles():
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]
    for key in STUDIES:
        assert (ROOT / "rules" / f"{key}.smk").is_file(), key
        assert key in schema and "enabled" in schema[key]["properties"], key
    plan = Plan(validate_experiment(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()), SCHEMA))
    for study in plan.enabled:
        assert set(study.figures()) <= set(study.figure_titles), study.key
        assert set(study.metric_tables()) <= set(study.paper_tables) | {"timestep_mse"}, study.key
