"""Whole-experiment checks run when the workflow starts, before any job: the schema, then what the
config points at (grammars, model folders and hub ids, data folders), image sizes against the models,
then each enabled study's own checks (kd_core.studies: training data, LoRA targets, ...) and the
names it derives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_core import config_checks
from kd_core.config import validate_config
from kd_core.config_checks import image_folder, model_source
from kd_core.errors import ConfigError, KDError
from kd_core.models.folders import check_size, pipeline_size_multiple, size_multiple
from kd_core.plan import Plan
from kd_core.prompts import load_grammar
from kd_core.sources import is_built
from kd_core.studies import STUDIES
from kd_core.world.render import DEFAULTS


def validate_experiment(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Validate against the schema (defaults filled in), then check grammars, model folders and hub
    ids, data folders and caption tables, image sizes against the models, each enabled study's
    section (kd_core.studies) and the names it derives."""
    cfg = validate_config(config, schema_path)
    main = _check_prompts(cfg)
    studies = [cls for cls in STUDIES.values() if cfg[cls.key]["enabled"]]
    if cfg["evaluate_images"] and "base_student" not in cfg["models"] and not any(s.compares_with_teacher for s in studies):
        with_teacher = [s.key for s in STUDIES.values() if s.compares_with_teacher]
        raise ConfigError("config key 'models' lacks 'base_student', which the image evaluation compares against; "
                          f"add one, enable {' or '.join(with_teacher)} (its students are compared with the teacher), "
                          "or set 'evaluate_images: false'")
    folders = {name: _check_model(cfg, name, model) for name, model in cfg["models"].items()}
    if main is None:
        _check_unconditional(cfg, folders)
    for cls in studies:
        if cls.samples_images and not cfg["evaluate_images"]:
            raise ConfigError(f"config key '{cls.key}.enabled' is true but 'evaluate_images' is false; its students "
                              "are sampled and evaluated like every model: set evaluate_images: true")
    _check_metrics(cfg)
    plan = Plan(cfg)
    for study in plan.enabled:
        study.check(folders, main)
    _check_sizes(cfg, folders, plan)
    try:
        plan.check_names()
    except KDError as exc:
        raise ConfigError(str(exc)) from None
    return cfg


def _check_unconditional(cfg: dict[str, Any], folders: dict[str, Path | None]) -> None:
    """``prompts.grammar: null``: a study without text. Every model must sample without a prompt and
    every study must be one that needs none (the model-size study)."""
    for section in [cls.key for cls in STUDIES.values() if cls.trains_on_prompts]:
        if cfg[section]["enabled"]:
            raise ConfigError(f"config key 'prompts.grammar' is null (an unconditional study, no text) but "
                              f"'{section}.enabled' is true, which trains on prompts; set a grammar or disable {section}")
    if cfg["world"]["enabled"]:
        raise ConfigError("config key 'prompts.grammar' is null (an unconditional study) but 'world.enabled' is true, "
                          "whose models draw prompts; set 'prompts.grammar: shapes' or 'world.enabled: false'")
    for name, model in cfg["models"].items():
        source, folder = model["source"], folders.get(name)
        text = source.startswith(("toy:", "tiny:sd")) or (
            folder is not None and any((folder / sub).is_dir() for sub in ("text_encoder", "text_encoder_2")))
        if text:
            raise ConfigError(f"config key 'models.{name}.source' is {source!r}, a text-to-image model, but "
                              "'prompts.grammar' is null (an unconditional study); set a grammar, or use an "
                              "unconditional model (ddpm:teacher, a DDPMPipeline or LDMPipeline folder)")


def _check_prompts(cfg: dict[str, Any]):
    """Both grammars load; the shapes world can draw the main one's slots; it has enough prompts. Returns
    it (None for an unconditional study: no grammar, the counts are sample counts)."""
    p = cfg["prompts"]
    if p["grammar"] is None:
        if p["seeds_per_prompt"] != 1:
            raise ConfigError(f"config key 'prompts.seeds_per_prompt' is {p['seeds_per_prompt']} but 'prompts.grammar' "
                              "is null: an unconditional study's n_train / n_eval / n_filler are sample counts, one "
                              "seed each; set seeds_per_prompt: 1 and the counts you want")
        return None
    grammars = {}
    for key in ("grammar", "filler_grammar"):
        try:
            grammars[key] = load_grammar(p[key])
        except ConfigError as exc:
            raise ConfigError(f"config key 'prompts.{key}': {exc}") from None
    main = grammars["grammar"]
    if cfg["world"]["enabled"]:
        drawable = set(DEFAULTS)
        for t in main.templates:
            if set(t.slots) - drawable:
                raise ConfigError(f"config key 'prompts.grammar' is {p['grammar']!r}, whose slots "
                                  f"{sorted(set(t.slots) - drawable)} the shapes world cannot draw; use a shapes grammar "
                                  "(slots among " + ", ".join(sorted(drawable)) + ") or set 'world.enabled: false'")
    if p["n_train"] + p["n_eval"] > main.size:
        raise ConfigError(f"config keys 'prompts.n_train' + 'prompts.n_eval' = {p['n_train'] + p['n_eval']} exceed "
                          f"the {main.size} distinct prompts of grammar {main.name!r}; lower them")
    total = p["n_train"] + p["n_eval"] + p["n_filler"]
    if p["filler_grammar"] == p["grammar"] and total > main.size:
        raise ConfigError(f"config keys 'prompts.n_train' + 'prompts.n_eval' + 'prompts.n_filler' = {total} exceed the "
                          f"{main.size} distinct prompts of grammar {main.name!r}, which the three splits share; lower them")
    return main


def _check_model(cfg: dict[str, Any], name: str, model: dict[str, Any]) -> Path | None:
    """A model of ``models``: its source (and VAE) checked; returns its folder when its files are here."""
    key = f"models.{name}.source"
    folder = model_source(model["source"], key, pipeline=True)
    if model["generation"]["vae"]:
        model_source(model["generation"]["vae"], f"models.{name}.generation.vae")
    if model["source"].startswith("toy:") and not cfg["world"]["enabled"]:
        raise ConfigError(f"config key '{key}' is {model['source']!r}, which needs 'world.enabled: true'")
    if model["source"] == "ddpm:teacher":
        _check_ddpm_teacher(cfg, name, model)
    if "filler" in model["splits"] and cfg["prompts"]["n_filler"] == 0:
        raise ConfigError(f"config key 'models.{name}.splits' asks for filler images but 'prompts.n_filler' is 0")
    return folder


def _check_ddpm_teacher(cfg: dict[str, Any], name: str, model: dict[str, Any]) -> None:
    """The DDPM teacher trained from scratch: its data, its autoencoder, its U-Net, how it may be sampled."""
    d = cfg["ddpm_teacher"]
    if not d["data"]:
        raise ConfigError(f"config key 'models.{name}.source' is 'ddpm:teacher', trained from scratch on "
                          "'ddpm_teacher.data', which is not set; give a folder <folder>/<class>/<image>")
    vae = d["vae"]
    if vae == "ddpm:teacher":
        raise ConfigError("config key 'ddpm_teacher.vae' is the DDPM teacher itself; give an autoencoder "
                          "(a folder, a hub id, or a pipeline such as 'toy:teacher' whose vae/ is used), or null")
    image_folder(d["data"], "ddpm_teacher.data", d["model"]["classes"])
    if vae:
        model_source(vae, "ddpm_teacher.vae")
    if vae and vae.startswith("toy:") and not cfg["world"]["enabled"]:
        raise ConfigError(f"config key 'ddpm_teacher.vae' is {vae!r}, which needs 'world.enabled: true'")
    _check_ddpm_model(d["model"], latent=bool(vae))
    gen = model["generation"]
    if vae and gen["dtype"] != "fp32":  # LDMPipeline draws float32 noise whatever the U-Net's dtype
        raise ConfigError(f"config key 'models.{name}.generation.dtype' is {gen['dtype']!r}; a latent DDPM "
                          "teacher (LDMPipeline) samples in fp32 only: set it to fp32")
    if vae and gen["scheduler"] in ("ddpm", "euler_a", "lcm"):
        raise ConfigError(f"config key 'models.{name}.generation.scheduler' is {gen['scheduler']!r}, whose step "
                          "noise a latent DDPM teacher (LDMPipeline) cannot seed; use default, ddim, dpmpp, euler, "
                          "unipc or pndm")


def _check_ddpm_model(m: dict[str, Any], latent: bool = False) -> None:
    """The DDPM's U-Net can be built: one attention flag per stage, widths the group norm and the
    attention heads divide, a pixel image size every down-sampling halves evenly (a latent DDPM's
    input size is known once its autoencoder is loaded: train_ddpm checks it before training)."""
    ch, groups, head = m["channels"], m["norm_num_groups"], m["attention_head_dim"]
    if len(m["attention"]) != len(ch):
        raise ConfigError(f"config key 'ddpm_teacher.model.attention' has {len(m['attention'])} entries for "
                          f"{len(ch)} stages (channels {ch}); give one per stage")
    bad = [c for c in ch if c % groups]
    if bad:
        raise ConfigError(f"config key 'ddpm_teacher.model.channels' has {bad}, not multiples of norm_num_groups "
                          f"{groups}; change one or the other")
    bad = [c for c, a in zip(ch, m["attention"], strict=True) if a and c % head]
    if bad:
        raise ConfigError(f"config key 'ddpm_teacher.model.channels' has {bad} at attention stages, not multiples of "
                          f"attention_head_dim {head}")
    if not latent and m["image_size"] % 2 ** (len(ch) - 1):
        raise ConfigError(f"config key 'ddpm_teacher.model.image_size' is {m['image_size']}, which {len(ch) - 1} "
                          f"down-samplings cannot halve evenly; use a multiple of {2 ** (len(ch) - 1)}")


def _check_metrics(cfg: dict[str, Any]) -> None:
    """Resolve ``metrics.features.extractor: auto`` and check the metric models and folders."""
    m, feats = cfg["metrics"], cfg["metrics"]["features"]
    world = cfg["world"]["enabled"]
    for key, source in (("metrics.clip_model", m["clip_model"]), ("metrics.features.model", feats["model"]),
                        ("metrics.features.real_images", feats["real_images"])):
        if key == "metrics.features.real_images" and source:
            config_checks.source(source, key)
        elif source:
            model_source(source, key)
    blocks = m["figures"]["grid_blocks"]
    grid = [n for n, model in cfg["models"].items() if {"eval", "filler"} <= set(model["splits"])]
    p = cfg["prompts"]
    if grid and (p["n_eval"] < blocks or p["n_filler"] < 3 * blocks):
        raise ConfigError(f"config key 'metrics.figures.grid_blocks' is {blocks}: the 2x2 grids of {grid} need "
                          f"prompts.n_eval >= {blocks} and prompts.n_filler >= {3 * blocks}; raise them or lower grid_blocks")
    if feats["extractor"] == "auto":
        feats["extractor"] = "classifier" if world else ("clip" if m["clip_model"] or feats["model"] else "none")
    if feats["extractor"] == "classifier" and not world:
        raise ConfigError("config key 'metrics.features.extractor' is 'classifier', which needs 'world.enabled: true'; "
                          "use clip or inception")
    if feats["extractor"] == "clip" and not (feats["model"] or m["clip_model"]):
        raise ConfigError("config key 'metrics.features.extractor' is 'clip' but neither 'metrics.features.model' nor "
                          "'metrics.clip_model' names a CLIP model")
    if feats["extractor"] == "inception" and not feats["model"]:
        raise ConfigError("config key 'metrics.features.extractor' is 'inception': set 'metrics.features.model' to the "
                          "local FID Inception weights file")


def _size_multiple(cfg: dict[str, Any], source: str, folder: Path | None) -> int | None:
    """The multiple a model's image sizes must be: from the toy world's config, or its folder's configs."""
    if source.startswith("toy:") and is_built(source):
        toy = cfg["world"]["toy"]
        return size_multiple({"block_out_channels": toy[source.split(":")[1]]["channels"]},
                             {"block_out_channels": toy["vae"]["channels"]}, text=True)
    return pipeline_size_multiple(folder) if folder is not None else None


def _check_sizes(cfg: dict[str, Any], folders: dict[str, Path | None], plan: Plan) -> None:
    """Every image size the config sets suits the model that takes it (models built as tiny random
    pipelines are checked by their jobs, before any work)."""
    sizes = [(name, f"models.{name}.generation.resolution", m["generation"]["resolution"]) for name, m in cfg["models"].items()]
    sizes += [size for study in plan.enabled for size in study.image_sizes()]
    for name, key, size in sizes:
        multiple = _size_multiple(cfg, cfg["models"][name]["source"], folders[name]) if size else None
        if multiple:
            try:
                check_size(size, multiple, f"config key '{key}'")
            except KDError as exc:
                raise ConfigError(str(exc)) from None
