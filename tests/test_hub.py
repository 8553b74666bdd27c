"""kd_core.hub: the hub ids a config needs, and their download as the loaders read them (no network:
the download functions are replaced by recorders)."""

from __future__ import annotations

import sys
import types

import pytest
import yaml

from kd_core import hub

CLIP_L = "openai/clip-vit-large-patch14"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
#: every shipped config that names hub ids, and the ids (key -> id), read from the files by hand
EXPECTED = {
    "config/experiments/sdxl_to_sd15_dogs.yaml": {"models.teacher.source": "stabilityai/stable-diffusion-xl-base-1.0",
                                                  "models.base_student.source": SD15, "metrics.clip_model": CLIP_L},
    "config/experiments/sd_turbo_wikiart.yaml": {"models.teacher.source": "CompVis/stable-diffusion-v1-4",
                                                 "models.base_student.source": "stabilityai/sd-turbo",
                                                 "lora.data": "huggan/wikiart", "metrics.clip_model": CLIP_L},
    "config/experiments/bk_sdm_sd15.yaml": {"models.teacher.source": SD15, "models.base_student.source":
                                            "nota-ai/bk-sdm-small", "metrics.clip_model": CLIP_L},
    "config/experiments/ssd_1b.yaml": {"models.teacher.source": "stabilityai/stable-diffusion-xl-base-1.0",
                                       "models.base_student.source": "segmind/SSD-1B",
                                       "models.teacher.generation.vae": "madebyollin/sdxl-vae-fp16-fix",
                                       "models.base_student.generation.vae": "madebyollin/sdxl-vae-fp16-fix",
                                       "metrics.clip_model": CLIP_L},
    "config/experiments/dmkd_cifar10.yaml": {"models.teacher.source": SD15, "dmkd.teacher.source": "microsoft/resnet-18"},
    "config/experiments/size_study_cifar10.yaml": {"metrics.features.model": "openai/clip-vit-base-patch32"},
    "config/experiments/shapes_sdxl.yaml": {},  # the shapes world's own models only
    "config/experiments/lcm_lora_sd15.yaml": {"models.teacher.source": SD15, "models.base_student.source": SD15,
                                              "metrics.clip_model": CLIP_L},
    "config/experiments/lcm_lora_sdxl.yaml": {"models.teacher.source": "stabilityai/stable-diffusion-xl-base-1.0",
                                              "models.base_student.source": "stabilityai/stable-diffusion-xl-base-1.0",
                                              "models.teacher.generation.vae": "madebyollin/sdxl-vae-fp16-fix",
                                              "models.base_student.generation.vae": "madebyollin/sdxl-vae-fp16-fix",
                                              "metrics.clip_model": CLIP_L},
}


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_each_real_config_lists_its_hub_ids(root, monkeypatch, path):
    monkeypatch.chdir(root)
    cfg, schema = hub.load([path])
    assert {r.key: r.repo_id for r in hub.hub_references(cfg, schema)} == EXPECTED[path]


def test_shipped_configs_are_all_covered(root):
    shipped = {str(p.relative_to(root)) for p in (root / "config/experiments").glob("*.yaml")}
    assert shipped == set(EXPECTED)


def test_built_and_local_models_are_not_hub_ids(root, monkeypatch, tmp_path):
    monkeypatch.chdir(root)
    cfg, schema = hub.load(["config/config.yaml"])
    assert hub.hub_references(cfg, schema) == []
    folder = tmp_path / "vae"
    folder.mkdir()
    cfg["models"]["teacher"]["generation"]["vae"] = str(folder)
    cfg["metrics"]["clip_model"] = "org/clip"
    cfg["lora"]["data"] = "teacher"
    refs = hub.hub_references(cfg, schema)
    assert [(r.key, r.repo_id, r.kind) for r in refs] == [("metrics.clip_model", "org/clip", "model")]


def test_variant_and_split_travel_with_the_id(root, monkeypatch):
    monkeypatch.chdir(root)
    cfg, schema = hub.load(["config/experiments/sdxl_to_sd15_dogs.yaml"])
    teacher = next(r for r in hub.hub_references(cfg, schema) if r.key == "models.teacher.source")
    assert teacher.kind == "pipeline" and dict(teacher.options) == {"variant": "fp16"}


def test_every_schema_key_that_names_a_hub_id_is_annotated(root):
    """A key whose description says it may be a hub id (or a datasets name) carries x-hub, so the
    models command lists it; a new such key without x-hub fails here."""
    schema = yaml.safe_load((root / "config/schema.yaml").read_text())
    missing, annotated = [], []

    def walk(node, path):
        if isinstance(node, dict):
            text = str(node.get("description", "")).lower()
            if "x-hub" in node:
                annotated.append(path)
            elif "type" in node and ("hub id" in text or "datasets name" in text):
                missing.append(path)
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(schema, "")
    assert missing == []
    assert len(annotated) == 10


def test_download_fetches_each_as_its_loader_reads_it(root, monkeypatch, capsys):
    calls = []
    import diffusers
    import huggingface_hub

    monkeypatch.setattr(diffusers.DiffusionPipeline, "download",
                        classmethod(lambda cls, repo, **kw: calls.append(("pipeline", repo, kw)) or f"/cache/{repo}"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, **kw: calls.append(("snapshot", repo, kw)) or f"/cache/{repo}")
    fake = types.SimpleNamespace(load_dataset=lambda repo, split: calls.append(("dataset", repo, {"split": split})),
                                 config=types.SimpleNamespace(HF_DATASETS_CACHE="/cache/datasets"))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.chdir(root)
    assert hub.main(["config/experiments/sd_turbo_wikiart.yaml", "--download"]) == 0
    assert calls == [
        ("pipeline", "CompVis/stable-diffusion-v1-4", {"use_safetensors": True}),
        ("pipeline", "stabilityai/sd-turbo", {"use_safetensors": True}),
        ("dataset", "huggan/wikiart", {"split": "train"}),
        ("snapshot", CLIP_L, {"repo_type": "model", "allow_patterns": hub.MODEL_FILES}),
    ]
    out = capsys.readouterr().out
    assert "lora.data" in out and "huggan/wikiart  (dataset; not cached)" in out
    assert "HF_HUB_OFFLINE=1" in out

    calls.clear()
    assert hub.main(["config/experiments/sdxl_to_sd15_dogs.yaml", "--download"]) == 0
    assert calls[0] == ("pipeline", "stabilityai/stable-diffusion-xl-base-1.0", {"use_safetensors": True,
                                                                               "variant": "fp16"})
    assert [c[1] for c in calls] == ["stabilityai/stable-diffusion-xl-base-1.0", SD15, CLIP_L]  # SD 1.5 once


def test_a_failed_download_is_one_line_and_the_rest_still_run(root, monkeypatch, capsys):
    import diffusers
    import huggingface_hub

    def refuse(cls, repo, **kw):
        raise OSError(f"{repo} is gated\nmore lines")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "download", classmethod(refuse))
    fetched = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: fetched.append(repo) or "/x")
    monkeypatch.chdir(root)
    assert hub.main(["config/experiments/bk_sdm_sd15.yaml", "--download"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"models.teacher.source: {SD15} not downloaded: OSError: {SD15} is gated",
                   "models.base_student.source: nota-ai/bk-sdm-small not downloaded: OSError: nota-ai/bk-sdm-small is gated",
                   f"2 of 3 not downloaded: {SD15}, nota-ai/bk-sdm-small"]
    assert fetched == [CLIP_L]


def test_cached_ids_are_reported_cached(root, monkeypatch, tmp_path, capsys):
    import huggingface_hub.constants

    snapshot = tmp_path / "models--openai--clip-vit-large-patch14" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.chdir(root)
    assert hub.main(["config/experiments/bk_sdm_sd15.yaml"]) == 0
    out = capsys.readouterr().out
    assert f"{CLIP_L}  (model; cached)" in out and f"{SD15}  (pipeline; not cached)" in out


def test_bad_config_is_one_line(root, monkeypatch, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts: {n_evals: 3}\n")
    monkeypatch.chdir(root)
    assert hub.main([str(bad)]) == 1
    assert capsys.readouterr().err.startswith("config error: unknown config key 'prompts.n_evals'")
