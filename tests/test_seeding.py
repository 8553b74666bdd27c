"""device: auto, the default of every stage: the GPU when there is one, else the CPU."""

import pytest
import torch
import yaml

from kd_core.experiment import validate_experiment
from kd_core.seeding import resolve_device, resolve_dtype

from .conftest import ROOT


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("cuda:1") == torch.device("cuda", 1)


def _devices(node, path=""):
    """(key path, value) of every ``device`` key in a validated config."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "device":
                yield path + k, v
            yield from _devices(v, f"{path}{k}.")


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "tiny.yaml"])
def test_the_shipped_offline_configs_run_every_stage_on_auto(name):
    """No stage pins the CPU: on a GPU machine `make demo` uses the GPU."""
    cfg = validate_experiment(yaml.safe_load((ROOT / "config" / name).read_text()), ROOT / "config" / "schema.yaml")
    devices = dict(_devices(cfg))
    assert len(devices) >= 10 and set(devices.values()) == {"auto"}, {k: v for k, v in devices.items() if v != "auto"}
