import pytest
import yaml

from kd_core.config import build, read_config_file, validate_config
from kd_core.errors import ConfigError
from kd_core.experiment import validate_experiment
from kd_core.generate import GenerationConfig
from kd_core.world.toy import ToyConfig, UNetConfig

from .conftest import ROOT, image_folder


@pytest.fixture
def schema(root):
    return root / "config" / "schema.yaml"


def test_defaults_are_filled(schema):
    cfg = validate_config({}, schema)
    assert cfg["prompts"]["n_eval"] == 32
    assert cfg["models"]["teacher"]["generation"]["steps"] == 25
    assert cfg["world"]["toy"]["student"]["channels"] == [16, 32]


SHIPPED = sorted(str(p.relative_to(ROOT / "config")) for p in (ROOT / "config").rglob("*.yaml") if p.name != "schema.yaml")


CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_are_valid(root, schema, name, tmp_path, monkeypatch):
    """Every config under config/ validates; the CIFAR-10 ones against the image folders they name (one image a class here)."""
    for split in ("train", "test"):
        image_folder(tmp_path / "data" / "cifar10" / split, CIFAR10)
    monkeypatch.chdir(tmp_path)  # relative data paths resolve against the working directory, as in a run
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # their hub ids are not in this machine's cache
    raw = yaml.safe_load((root / "config" / name).read_text())
    cfg = validate_experiment(raw, schema)
    top = yaml.safe_load(schema.read_text())["properties"]
    assert cfg["experiment"] == raw["experiment"] and set(top) <= set(cfg)  # every section, defaults filled in
    for section, value in raw.items():  # what the file says survives validation
        if not isinstance(value, dict):
            assert cfg[section] == value, section


def test_every_config_is_checked():
    assert {"config.yaml", "smoke.yaml", "tiny.yaml", "experiments/dmkd_cifar10.yaml",
            "experiments/size_study_cifar10.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("patch,message", [
    ({"prompts": {"n_evals": 3}}, "unknown config key 'prompts.n_evals'; allowed keys here: filler_grammar"),
    ({"classifier_kd": {"enabled": False}}, "config key 'classifier_kd' is now called 'dmkd'; rename it in your config file"),
    ({"shards": {"images": 2.0}}, "config key 'shards.images' is 2.0, of the wrong type; expected integer (write 2)"),
    ({"size_study": {"timestep_mse": {"device": "gpu"}}},
     "config key 'size_study.timestep_mse.device' is 'gpu'; allowed: auto, cpu, cuda, cuda:<index>, mps"),
    ({"size_study": {"trajectory": {"scheduler": "foo"}}}, "config key 'size_study.trajectory.scheduler' is 'foo'; allowed: 'default'"),
    ({"prompts": {"n_eval": True}}, "config key 'prompts.n_eval' is True, of the wrong type; expected integer"),
    ({"prompts": {"n_eval": "ten"}}, "config key 'prompts.n_eval' is 'ten', of the wrong type; expected integer"),
    ({"prompts": {"n_eval": 0}}, "config key 'prompts.n_eval' is 0, out of range; allowed: >= 1"),
    ({"world": {"toy": {"teacher": {"channels": [32, 64], "steps": 10, "lr": -1}}}},
     "config key 'world.toy.teacher.lr' is -1, out of range; allowed: > 0"),
    ({"models": {"teacher": {"source": "./no/such/model"}, "base_student": {"source": "toy:student"}}},
     "config key 'models.teacher.source': local path './no/such/model' does not exist"),
    ({"models": {"teacher": {"source": "toy:teacher", "generation": {"scheduler": "magic"}},
                 "base_student": {"source": "toy:student"}}},
     "config key 'models.teacher.generation.scheduler' is 'magic'; allowed: 'default', 'ddim'"),
    ({"prompts": {"grammar": "cats"}}, "config key 'prompts.grammar': unknown grammar 'cats'"),
    ({"prompts": {"grammar": "dogs"}}, "config key 'prompts.grammar' is 'dogs', whose slots ['breed', 'environment'"),
    ({"prompts": {"n_train": 430, "n_eval": 10}}, "'prompts.n_train' + 'prompts.n_eval' = 440 exceed the 432"),
    ({"models": {"teacher": {"source": "tiny:sd15"}, "base_student": {"source": "toy:student"}}},
     "config key 'models.teacher.source' is 'tiny:sd15'; built models are"),
    ({"models": {"teacher": {"source": "toy:teacher", "splits": ["eval", "filler"]}, "base_student": {"source": "toy:student"}},
      "prompts": {"n_filler": 10}},
     "config key 'metrics.figures.grid_blocks' is 16: the 2x2 grids of ['teacher'] need prompts.n_eval >= 16"),
    ({"world": {"enabled": False}, "prompts": {"grammar": "dogs", "filler_grammar": "artistic"},
      "models": {"teacher": {"source": "tiny:sdxl"}, "base_student": {"source": "tiny:sd"}},
      "metrics": {"features": {"extractor": "classifier"}}},
     "config key 'metrics.features.extractor' is 'classifier', which needs 'world.enabled: true'"),
    ({"metrics": {"features": {"extractor": "inception"}}}, "config key 'metrics.features.extractor' is 'inception': set"),
    ({"metrics": {"clip_model": "./no/clip"}}, "config key 'metrics.clip_model': local path './no/clip' does not exist"),
    # an unconditional study (no grammar): only models and studies without text
    ({"prompts": {"grammar": None}, "lora": {"enabled": True}}, "config key 'prompts.grammar' is null (an unconditional study, no text) but "
     "'lora.enabled' is true, which trains on prompts; set a grammar or disable lora"),
    ({"prompts": {"grammar": None}, "lora": {"enabled": False}, "block_kd": {"enabled": False}, "dmkd": {"enabled": False}},
     "config key 'prompts.grammar' is null (an unconditional study) but 'world.enabled' is true"),
    ({"prompts": {"grammar": None, "seeds_per_prompt": 4}}, "config key 'prompts.seeds_per_prompt' is 4 but 'prompts.grammar' is null"),
    ({"world": {"enabled": False}, "prompts": {"grammar": None}, "lora": {"enabled": False}, "block_kd": {"enabled": False},
      "dmkd": {"enabled": False}, "size_study": {"enabled": True},
      "models": {"teacher": {"source": "tiny:sd"}}},
     "config key 'models.teacher.source' is 'tiny:sd', a text-to-image model, but 'prompts.grammar' is null"),
])
def test_bad_config_is_one_line_naming_the_key(schema, patch, message):
    with pytest.raises(ConfigError) as info:
        validate_experiment(patch, schema)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_build_nested_dataclasses():
    toy = build(ToyConfig, {"teacher": {"channels": [8, 16], "steps": 3}, "grammars": ["shapes"]})
    assert toy.teacher == UNetConfig(channels=(8, 16), steps=3)
    assert toy.grammars == ("shapes",)
    assert build(GenerationConfig, {"steps": 2, "resolution": None}).steps == 2


def test_feature_extractor_auto(schema):
    assert validate_experiment({}, schema)["metrics"]["features"]["extractor"] == "classifier"
    real = {"world": {"enabled": False}, "prompts": {"grammar": "dogs", "filler_grammar": "artistic"},
            "models": {"teacher": {"source": "tiny:sdxl"}, "base_student": {"source": "tiny:sd"}}}
    assert validate_experiment(real, schema)["metrics"]["features"]["extractor"] == "none"
    real["metrics"] = {"clip_model": "tiny:clip"}
    assert validate_experiment(real, schema)["metrics"]["features"]["extractor"] == "clip"


@pytest.mark.parametrize("text,message", [
    ("a: 1\nb:\n  c: 2\n  c: 3\n", "line 4: key 'c' is given twice (first on line 3)"),
    ("a: 1\nb: {c: 2\n", "line 3, column 1: expected ',' or '}', but got '<stream end>'"),
    ("a: 1\n\tb: 2\n", "line 2, column 1: found character '\\t' that cannot start any token"),
    ("", "is empty; give at least 'experiment: <name>'"),
    ("- a\n- b\n", "holds a list, not a mapping of keys"),
])
def test_config_files_are_read_strictly(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_merge_keys_and_missing_files(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: &b {x: 1, y: 1}\nother:\n  <<: *b\n  y: 2\n")
    assert read_config_file(path) == {"base": {"x": 1, "y": 1}, "other": {"x": 1, "y": 2}}
    with pytest.raises(ConfigError, match="cannot be read"):
        read_config_file(tmp_path / "none.yaml")
