"""Bad input, one table: a broken config, command line, data folder, model folder or checkpoint,
and the exit status, one message line without a traceback, and nothing written.

Where the workflow checks the input (config, command line, data and model folders), a case runs
in this process through ``python -m kd_core.check``'s entry (the files read strictly, merged as
Snakemake merges them, then ``validate_experiment``: what ``rules/common.smk`` runs when Snakemake
reads the workflow), in the case's folder, with its files listed before and after. One case of each
kind, and the hub-id cases (the Hugging Face cache found through the environment), stay real
Snakemake runs (not dry runs), which must stop before any job starts: no results/ folder. The
``check`` cases run ``python -m kd_core.check``; the checkpoint cases a training job as the
workflow runs one, and the run they resume is compared with an undamaged run's.

Downloads are off and the Hugging Face cache is an empty folder in every case, so a hub id behaves
the same on every machine. The subprocess cases run two at a time (one per core) before their assertions.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from ..conftest import damage, image_folder
from .conftest import ROOT, SNAKEMAKE

# Lines Snakemake prints before the workflow's own checks run (not messages about the input).
BANNER = ("Using workflow specific profile", "Creating specified working directory",
          "Config file config/config.yaml is extended", f"Config file {ROOT}/config/config.yaml is extended")

DDPM = "models:\n  teacher: {source: 'ddpm:teacher'}\n  base_student: {source: 'toy:student'}\n"
STUDENT_PIPE = "models:\n  teacher: {source: 'toy:teacher', splits: [train, eval]}\n  base_student: {source: '@case/pipe'}\n"
LOCAL_TEACHER = "models:\n  teacher: {source: '@case/pipe'}\n  base_student: {source: 'toy:student'}\n"
TRAIN_TEACHER = "models:\n  teacher: {source: '@case/pipe', splits: [train, eval]}\n  base_student: {source: 'toy:student'}\n"


@dataclass
class Case:
    kind: str  # config | command line | data folder | model folder | checkpoint
    name: str
    config: str | None = None  # YAML of bad.yaml; @case, @pipe, @images, @captions are filled in
    expect: str = ""  # part of the message line
    prepare: Callable[[Path, Path], None] | None = None  # (case folder, shared assets): makes files
    command: str = "snakemake"  # snakemake (dry run) | check (python -m kd_core.check) | train (a training job)
    args: tuple[str, ...] = ()
    returncode: int = 1
    env: dict[str, str] = field(default_factory=dict)
    resumed: str = ""  # a checkpoint case: the line the resumed training writes (from which step)

    @property
    def id(self) -> str:
        return f"{self.kind}: {self.name}"


# ---- what the cases prepare ---------------------------------------------------------------------
def copy_pipe(case: Path, assets: Path) -> Path:
    return Path(shutil.copytree(assets / "pipe", case / "pipe"))


def pipe_damaged(rel: str, kind: str) -> Callable[[Path, Path], None]:
    def prepare(case: Path, assets: Path) -> None:
        damage(copy_pipe(case, assets) / rel, kind)
    return prepare


def pipe_edited(edit: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    def prepare(case: Path, assets: Path) -> None:
        edit(copy_pipe(case, assets))
    return prepare


def write(rel: str, content: str | bytes) -> Callable[[Path, Path], None]:
    def prepare(case: Path, assets: Path) -> None:
        path = case / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return prepare


def images(rel: str, classes=("cat", "dog"), then: Callable[[Path], None] | None = None) -> Callable[[Path, Path], None]:
    def prepare(case: Path, assets: Path) -> None:
        root = image_folder(case / rel, classes)
        if then is not None:
            then(root)
    return prepare


def captions(table: pd.DataFrame | None = None, name: str = "captions.csv") -> Callable[[Path, Path], None]:
    def prepare(case: Path, assets: Path) -> None:
        root = image_folder(case / "captions", ["img"]).joinpath("img")
        df = table if table is not None else pd.DataFrame({"file": ["0.png"], "caption": ["a cat"]})
        if name:
            df.to_csv(root / name, index=False) if name.endswith(".csv") else df.to_parquet(root / name)
    return prepare


def checkpoints(then: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    """A finished toy training run (checkpoints at steps 2, 4, 6) in the case folder, then ``then(run)``."""
    def prepare(case: Path, assets: Path) -> None:
        toy_run(case / "run")
        then(case / "run")
    return prepare


def toy_run(run_dir: Path) -> None:
    """A training job as the workflow runs one (kd_core.runlog.job around a Trainer), on a linear model."""
    import torch

    from kd_core.runlog import job
    from kd_core.train.loop import TrainConfig, Trainer

    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    y = x.sum(1)

    def loss(model, batch, gen):
        i = batch.local
        return {"loss": ((model(x[i]).squeeze(-1) - y[i]) ** 2).mean()}

    with job(None):
        torch.manual_seed(0)
        cfg = TrainConfig(max_steps=6, batch_size=8, lr=1e-2, checkpoint_every=2, keep_checkpoints=3, seed=0, device="cpu")
        Trainer(torch.nn.Linear(4, 1), loss, len(x), run_dir, cfg, name="toy").fit()


def rm(rel: str) -> Callable[[Path], None]:
    return lambda root: (shutil.rmtree if (root / rel).is_dir() else Path.unlink)(root / rel)


def json_edit(rel: str, **values) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        data = json.loads((root / rel).read_text())
        (root / rel).write_text(json.dumps({**data, **values}))
    return edit


CASES = [
    # ---- config: the schema, strict YAML, what each value is for --------------------------------
    Case("config", "unknown key", "prompts: {n_evals: 3}\n", "unknown config key 'prompts.n_evals'"),
    Case("config", "unknown top-level key", "promtps: {n_eval: 3}\n", "unknown config key 'promtps'"),
    Case("config", "duplicate top-level key", "prompts: {n_train: 6}\nseed: 1\nprompts: {n_train: 256}\n",
         "bad.yaml, line 3: key 'prompts' is given twice (first on line 1); keep one"),
    Case("config", "duplicate nested key", "prompts:\n  n_train: 6\n  n_train: 8\n", "line 3: key 'n_train' is given twice"),
    Case("config", "old key name", "classifier_kd: {enabled: false}\n", "config key 'classifier_kd' is now called 'dmkd'"),
    Case("config", "wrong type", "prompts: {n_eval: ten}\n", "config key 'prompts.n_eval' is 'ten', of the wrong type"),
    Case("config", "float for a count", "shards: {images: 2.0}\n", "config key 'shards.images' is 2.0, of the wrong type; expected integer (write 2)"),
    Case("config", "bool for a count", "prompts: {n_eval: true}\n", "config key 'prompts.n_eval' is True, of the wrong type"),
    Case("config", "out of range", "models:\n  teacher: {source: 'toy:teacher', generation: {guidance_scale: 99}}\n"
         "  base_student: {source: 'toy:student'}\n", "config key 'models.teacher.generation.guidance_scale' is 99, out of range"),
    Case("config", "negative seed", "seed: -1\n", "config key 'seed' is -1, out of range; allowed: >= 0"),
    Case("config", "unknown scheduler", "models:\n  teacher: {source: 'toy:teacher', generation: {scheduler: heun}}\n  base_student: {source: 'toy:student'}\n",
         "config key 'models.teacher.generation.scheduler' is 'heun'; allowed: 'default', 'ddim'"),
    Case("config", "unknown dtype", "models:\n  teacher: {source: 'toy:teacher', generation: {dtype: fp8}}\n  base_student: {source: 'toy:student'}\n",
         "config key 'models.teacher.generation.dtype' is 'fp8'; allowed: 'auto', 'fp32'"),
    Case("config", "device gpu", "size_study: {timestep_mse: {device: gpu}}\n",
         "config key 'size_study.timestep_mse.device' is 'gpu'; allowed: auto, cpu, cuda, cuda:<index>, mps"),
    Case("config", "trajectory scheduler", "size_study: {trajectory: {scheduler: foo}}\n",
         "config key 'size_study.trajectory.scheduler' is 'foo'; allowed:"),
    Case("config", "lr scheduler", "lora: {train: {lr_scheduler: exponential}}\n", "config key 'lora.train.lr_scheduler' is 'exponential'"),
    Case("config", "experiment '..'", "experiment: '..'\n", "config key 'experiment' is '..'; use a name of letters"),
    Case("config", "experiment with a slash", "experiment: ../elsewhere\n", "config key 'experiment' is '../elsewhere'"),
    Case("config", "experiment absolute", "experiment: /tmp/x\n", "config key 'experiment' is '/tmp/x'"),
    Case("config", "too many prompts", "prompts: {n_train: 400, n_eval: 100}\n",
         "'prompts.n_train' + 'prompts.n_eval' = 500 exceed the 432 distinct prompts of grammar 'shapes'"),
    Case("config", "unknown grammar", "prompts: {grammar: cats}\n", "config key 'prompts.grammar': unknown grammar 'cats'"),
    Case("config", "grammar slots the world cannot draw", "prompts: {grammar: dogs}\n",
         "config key 'prompts.grammar' is 'dogs', whose slots"),
    Case("config", "lora student unknown", "lora: {enabled: true, student: nobody}\n", "config key 'lora.student' is 'nobody'"),
    Case("config", "lora data teacher without train images",
         "models:\n  teacher: {source: 'toy:teacher', splits: [eval]}\n  base_student: {source: 'toy:student'}\nlora: {enabled: true}\n",
         "config key 'lora.data' is 'teacher' but 'models.teacher.splits' lacks 'train'"),
    Case("config", "filler split without filler prompts",
         "prompts: {n_filler: 0}\nmodels:\n  teacher: {source: 'toy:teacher', splits: [train, eval, filler]}\n  base_student: {source: 'toy:student'}\n",
         "config key 'models.teacher.splits' asks for filler images but 'prompts.n_filler' is 0"),
    Case("config", "grid blocks", "metrics: {figures: {grid_blocks: 40}}\nmodels:\n  teacher: {source: 'toy:teacher', splits: [train, eval, filler]}\n  base_student: {source: 'toy:student'}\n",
         "config key 'metrics.figures.grid_blocks' is 40"),
    Case("config", "block KD without image evaluation", "evaluate_images: false\nblock_kd: {enabled: true}\n",
         "config key 'block_kd.enabled' is true but 'evaluate_images' is false"),
    Case("config", "classifier features without the world",
         "world: {enabled: false}\nmodels:\n  teacher: {source: 'tiny:sd'}\n  base_student: {source: 'tiny:sd'}\n"
         "metrics: {features: {extractor: classifier}}\n", "config key 'metrics.features.extractor' is 'classifier'"),
    Case("config", "toy model without the world", "world: {enabled: false}\n",
         "config key 'models.teacher.source' is 'toy:teacher', which needs 'world.enabled: true'"),
    Case("config", "unknown built model", "models:\n  teacher: {source: 'toy:teachr'}\n  base_student: {source: 'toy:student'}\n", "config key 'models.teacher.source' is 'toy:teachr'; built models are"),
    Case("config", "width factors with one name", "size_study: {enabled: true, factors: [0.5, 0.5000001]}\n",
         "config key 'size_study.factors' has 0.5 and 0.5000001, which both make the name 'w0p5'"),
    Case("config", "guidance scales with one name", "dmkd: {enabled: true, synthetic: {guidance: [2.0, 2.0000001]}}\n",
         "config key 'dmkd.synthetic.guidance' has 2.0 and 2.0000001, which both make the name 'g2'"),
    Case("config", "set fractions with one name", "dmkd: {enabled: true, synthetic: {fractions: [0.25, 0.251]}}\n",
         "config key 'dmkd.synthetic.fractions' has 0.25 and 0.251, which both make the name 'f25'"),
    Case("config", "dmkd label", "dmkd: {enabled: true, labels: [mood]}\n", "config key 'dmkd.labels' has ['mood'], not attributes"),
    Case("config", "resolution the toy teacher cannot take", "models:\n  teacher: {source: 'toy:teacher', generation: {resolution: 30}}\n  base_student: {source: 'toy:student'}\n",
         "config key 'models.teacher.generation.resolution' is 30 px, which this model cannot take: its autoencoder and U-Net "
         "need a multiple of 8 (e.g. 24 or 32)"),
    Case("config", "training resolution the teacher cannot take",
         "block_kd: {enabled: true, resolution: 20}\nworld: {toy: {teacher: {layers_per_block: 2}}}\n",
         "config key 'block_kd.resolution' is 20 px"),
    Case("config", "ddpm widths", "ddpm_teacher: {data: '@images', model: {channels: [30, 60], attention: [false, true]}}\n" + DDPM,
         "config key 'ddpm_teacher.model.channels' has [30, 60], not multiples of norm_num_groups 32", images("images")),
    Case("config", "ddpm attention flags", "ddpm_teacher: {data: '@images', model: {attention: [true]}}\n" + DDPM,
         "config key 'ddpm_teacher.model.attention' has 1 entries for 4 stages", images("images")),
    Case("config", "ddpm autoencoder is itself", "ddpm_teacher: {data: '@images', vae: 'ddpm:teacher'}\n" + DDPM,
         "config key 'ddpm_teacher.vae' is the DDPM teacher itself", images("images")),
    Case("config", "ddpm latent dtype", "ddpm_teacher: {data: '@images', vae: 'toy:teacher'}\n" + DDPM,
         "config key 'models.teacher.generation.dtype' is 'auto'; a latent DDPM teacher (LDMPipeline) samples in fp32 only",
         images("images")),
    Case("config", "relative path that is no folder: a hub id", "models:\n  teacher: {source: models/sd15}\n"
         "  base_student: {source: 'toy:student'}\n", "is the hub id 'models/sd15' (no such local folder in @case either)"),
    Case("config", "missing local model", "models:\n  teacher: {source: /data/models/sdxl}\n  base_student: {source: 'toy:student'}\n",
         "config key 'models.teacher.source': local path '/data/models/sdxl' does not exist"),
    Case("config", "hub id not cached, offline", "models:\n  teacher: {source: stabilityai/sdxl-turbo}\n  base_student: {source: 'toy:student'}\n",
         "config key 'models.teacher.source' is the hub id 'stabilityai/sdxl-turbo' (no such local folder in @case either), "
         "which is not in the Hugging Face cache"),
    Case("config", "hub dataset not cached, offline", "lora: {enabled: true, data: huggan/wikiart}\n",
         "'hf download huggan/wikiart --repo-type dataset'"),
    Case("config", "hub CLIP model not cached, offline", "metrics: {clip_model: openai/clip-vit-base-patch32}\n",
         "config key 'metrics.clip_model' is the hub id 'openai/clip-vit-base-patch32'"),
    Case("config", "lora targets absent from the student", "lora: {enabled: true, unet_targets: [nosuch_proj]}\n" + STUDENT_PIPE,
         "config key 'lora.unet_targets' has ['nosuch_proj'], which name no module of the student's unet", copy_pipe),
    Case("config", "text encoder targets absent", "lora: {enabled: true, text_encoder: true, text_targets: [c_attn]}\n" + STUDENT_PIPE,
         "config key 'lora.text_targets' has ['c_attn'], which name no module of the student's text_encoder", copy_pipe),
    Case("config", "an SDXL block-KD level of an SD teacher", "block_kd: {enabled: true, levels: [ssd_1b]}\n" + TRAIN_TEACHER,
         "config key 'block_kd.levels' has 'ssd_1b', which the teacher @case/pipe cannot give: the ssd_1b student is "
         "defined for an SDXL-layout teacher U-Net", copy_pipe),
    Case("config", "a block-KD level of a teacher with one layer per block", "block_kd: {enabled: true}\n" + TRAIN_TEACHER,
         "config key 'block_kd.levels' has 'bk_small', which the teacher @case/pipe cannot give: BK-SDM students remove "
         "one layer per stage: the teacher needs layers_per_block >= 2", copy_pipe),
    Case("config", "an SDXL block-KD level of the toy teacher", "block_kd: {enabled: true, levels: [koala_1b]}\n",
         "config key 'block_kd.levels' has 'koala_1b', which the teacher toy:teacher cannot give: the koala_1b student is "
         "defined for an SDXL-layout teacher U-Net"),
    Case("config", "a BK-SDM level of the SDXL-style toy teacher", "block_kd: {enabled: true, levels: [bk_small]}\n"
         "models:\n  teacher: {source: 'toy:teacher_xl', splits: [train, eval]}\n  base_student: {source: 'toy:student'}\n",
         "config key 'block_kd.levels' has 'bk_small', which the teacher toy:teacher_xl cannot give: bk_small is defined "
         "for SD 1.x-style U-Nets; this teacher has SDXL's micro-conditioning"),
    Case("config", "the SDXL-style toy teacher with two stages", "world: {toy: {teacher_xl: {channels: [32, 64]}}}\n",
         "config key 'world.toy.teacher_xl.channels': [32, 64] is too short"),
    Case("config", "resolution a local pipeline cannot take", "models:\n  teacher: {source: '@case/pipe', generation: {resolution: 36}}\n"
         "  base_student: {source: 'toy:student'}\n", "config key 'models.teacher.generation.resolution' is 36 px", copy_pipe),
    # grammar files
    Case("config", "grammar file missing", "prompts: {grammar: '@case/mine.yaml'}\n",
         "config key 'prompts.grammar': grammar file '@case/mine.yaml' does not exist"),
    Case("config", "grammar without templates", "prompts: {grammar: '@case/g.yaml'}\n", "g.yaml lacks a non-empty list 'templates'",
         write("g.yaml", "name: mine\n")),
    Case("config", "grammar without name", "prompts: {grammar: '@case/g.yaml'}\n", "lacks 'name: <grammar name>'",
         write("g.yaml", "templates:\n  - template: 'a {shape}'\n    slots: {shape: [circle]}\n")),
    Case("config", "grammar empty", "prompts: {grammar: '@case/g.yaml'}\n", "g.yaml is empty", write("g.yaml", "")),
    Case("config", "grammar YAML error", "prompts: {grammar: '@case/g.yaml'}\n", "g.yaml, line 2, column",
         write("g.yaml", "name: mine\ntemplates: [a: b: c]\n")),
    Case("config", "grammar template not a mapping", "prompts: {grammar: '@case/g.yaml'}\n",
         "templates[0] is not a mapping with a 'template' string", write("g.yaml", "name: mine\ntemplates: [just text]\n")),
    Case("config", "grammar undefined slot", "prompts: {grammar: '@case/g.yaml'}\n", "uses undefined slot(s) ['colour']",
         write("g.yaml", "name: mine\ntemplates:\n  - template: 'a {colour} {shape}'\n    slots: {shape: [circle]}\n")),
    Case("config", "grammar slot not a list", "prompts: {grammar: '@case/g.yaml'}\n", "slot(s) ['shape'] of templates[0] are not non-empty lists",
         write("g.yaml", "name: mine\ntemplates:\n  - template: 'a {shape}'\n    slots: {shape: circle}\n")),
    Case("config", "grammar key twice", "prompts: {grammar: '@case/g.yaml'}\n", "g.yaml, line 2: key 'name' is given twice",
         write("g.yaml", "name: a\nname: b\ntemplates: []\n")),
    # ---- command line ------------------------------------------------------------------------------
    Case("command line", "--config unknown key", None, "unknown config key 'nosuch'", args=("--config", "nosuch=1")),
    Case("command line", "--config wrong type", None, "config key 'seed' is 'abc', of the wrong type", args=("--config", "seed=abc")),
    Case("command line", "--config experiment outside results", None, "config key 'experiment' is '../x'",
         args=("--config", "experiment=../x")),
    Case("command line", "--config a section as a number", None, "config key 'prompts' is 3, of the wrong type; expected object",
         args=("--config", "prompts=3")),
    Case("command line", "check: YAML syntax error", "prompts: {n_eval: 3\nseed: 1\n", "bad.yaml, line 2, column 5:", command="check"),
    Case("command line", "check: tab indentation", "prompts:\n\tn_eval: 3\n", "bad.yaml, line 2, column 1:", command="check"),
    Case("command line", "check: empty config file", "", "bad.yaml is empty; give at least 'experiment: <name>'", command="check"),
    Case("command line", "check: config file holds a list", "- a\n- b\n", "bad.yaml holds a list, not a mapping", command="check"),
    Case("command line", "check: config file missing", None, "config file @case/nosuch.yaml cannot be read (No such file or directory)",
         command="check", args=("@case/nosuch.yaml",)),
    Case("command line", "check: config file is a folder", None, "config file @case cannot be read (Is a directory)",
         command="check", args=("@case",)),
    Case("command line", "check: --config not KEY=VALUE", None, "--config 'seed' is not KEY=VALUE", command="check",
         args=("--config", "seed")),
    Case("command line", "check: schema error", "prompts: {n_eval: -1}\n", "config key 'prompts.n_eval' is -1, out of range",
         command="check"),
    # ---- data folders ------------------------------------------------------------------------------
    Case("data folder", "image folder is a file", "ddpm_teacher: {data: '@case/data.zip'}\n" + DDPM,
         "config key 'ddpm_teacher.data': image folder @case/data.zip is a file, not a folder", write("data.zip", b"PK")),
    Case("data folder", "image folder missing", "ddpm_teacher: {data: '@case/nothere'}\n" + DDPM,
         "config key 'ddpm_teacher.data': image folder @case/nothere does not exist"),
    Case("data folder", "no class folders", "ddpm_teacher: {data: '@case/flat'}\n" + DDPM, "image folder @case/flat has no class sub-folders",
         write("flat/0.png", b"")),
    Case("data folder", "class folder without images", "ddpm_teacher: {data: '@images'}\n" + DDPM,
         "class folder @case/images/dog holds no images", images("images", then=lambda r: [p.unlink() for p in (r / "dog").iterdir()])),
    Case("data folder", "unreadable image", "ddpm_teacher: {data: '@images'}\n" + DDPM, "unreadable image @case/images/cat/0.png",
         images("images", then=lambda r: (r / "cat" / "0.png").write_bytes(b"\x89PNG broken"))),
    Case("data folder", "class named in the config missing", "ddpm_teacher: {data: '@images', model: {classes: [cat, bird]}}\n" + DDPM,
         "image folder @case/images lacks the class folder(s) ['bird']; it has ['cat', 'dog']", images("images")),
    Case("data folder", "dmkd real folder without splits", "dmkd: {enabled: true, real: '@images'}\n",
         "config key 'dmkd.real': '@case/images' lacks the sub-folder(s) ['train', 'test']", images("images")),
    Case("data folder", "dmkd real test split empty", "dmkd: {enabled: true, real: '@case/real'}\n",
         "class folder @case/real/test/cat holds no images",
         lambda case, assets: (image_folder(case / "real" / "train", ["cat"]), (case / "real" / "test" / "cat").mkdir(parents=True))),
    Case("data folder", "dmkd synthetic folder missing", "dmkd: {enabled: true, synthetic: {folder: '@case/syn'}}\n",
         "config key 'dmkd.synthetic.folder': image folder @case/syn does not exist"),
    Case("data folder", "caption folder without a table", "lora: {enabled: true, data: '@captions'}\n",
         "config key 'lora.data': dataset folder @case/captions/img has no metadata.jsonl", captions(name="")),
    Case("data folder", "caption table without a caption column", "lora: {enabled: true, data: '@captions'}\n",
         "needs an image column (file/file_name/image) and a caption column", captions(pd.DataFrame({"file": ["0.png"], "label": ["x"]}))),
    Case("data folder", "caption table names a missing image", "lora: {enabled: true, data: '@captions'}\n",
         "1 image file(s) missing, e.g. @case/captions/img/9.png", captions(pd.DataFrame({"file": ["0.png", "9.png"], "caption": ["a", "b"]}))),
    Case("data folder", "caption table empty", "block_kd: {enabled: true, data: '@captions'}\n",
         "config key 'block_kd.data': dataset @case/captions/img has no images (its caption table lists none)",
         captions(pd.DataFrame({"file": pd.Series([], dtype=str), "caption": pd.Series([], dtype=str)}), "captions.parquet")),
    Case("data folder", "lora data a file that is no table", "lora: {enabled: true, data: '@case/notes.txt'}\n",
         "is neither a manifest .parquet nor a folder with captions", write("notes.txt", "hello")),
    # ---- model folders -----------------------------------------------------------------------------
    Case("model folder", "text encoder where a pipeline is expected", "models:\n  teacher: {source: '@case/pipe/text_encoder'}\n  base_student: {source: 'toy:student'}\n",
         "config key 'models.teacher.source': @case/pipe/text_encoder is a CLIPTextModel model, not a diffusers pipeline", copy_pipe),
    Case("model folder", "U-Net where a pipeline is expected", "models:\n  teacher: {source: '@case/pipe/unet'}\n  base_student: {source: 'toy:student'}\n",
         "it is the unet/ component of the pipeline @case/pipe: give that folder", copy_pipe),
    Case("model folder", "image folder where a pipeline is expected", "models:\n  teacher: {source: '@images'}\n  base_student: {source: 'toy:student'}\n",
         "@case/images is an image folder, not a diffusers pipeline", images("images")),
    Case("model folder", "a file where a pipeline is expected", "models:\n  teacher: {source: '@case/model.ckpt'}\n  base_student: {source: 'toy:student'}\n",
         "config key 'models.teacher.source': @case/model.ckpt is a file, not a diffusers pipeline", write("model.ckpt", b"\0" * 16)),
    Case("model folder", "U-Net weights truncated", LOCAL_TEACHER, "unet/diffusion_pytorch_model.safetensors is truncated",
         pipe_damaged("unet/diffusion_pytorch_model.safetensors", "truncated")),
    Case("model folder", "U-Net weights empty", LOCAL_TEACHER, "unet/diffusion_pytorch_model.safetensors is empty",
         pipe_damaged("unet/diffusion_pytorch_model.safetensors", "empty")),
    Case("model folder", "VAE weights overwritten", LOCAL_TEACHER, "vae/diffusion_pytorch_model.safetensors is truncated or not a safetensors file",
         pipe_damaged("vae/diffusion_pytorch_model.safetensors", "corrupt")),
    Case("model folder", "text encoder weights appended to", LOCAL_TEACHER, "text_encoder/model.safetensors has 16 bytes more",
         pipe_damaged("text_encoder/model.safetensors", "appended")),
    Case("model folder", "U-Net config missing", LOCAL_TEACHER, "component unet folder @case/pipe/unet has no config.json",
         pipe_damaged("unet/config.json", "deleted")),
    Case("model folder", "U-Net config truncated", LOCAL_TEACHER, "unet/config.json is not valid JSON", pipe_damaged("unet/config.json", "truncated")),
    Case("model folder", "model_index.json damaged", LOCAL_TEACHER, "model_index.json is not valid JSON", pipe_damaged("model_index.json", "truncated")),
    Case("model folder", "component folder missing", LOCAL_TEACHER, "component folder vae/ that model_index.json lists is missing",
         pipe_edited(rm("vae"))),
    Case("model folder", "pickled weights only", LOCAL_TEACHER, "(only ['diffusion_pytorch_model.bin']: pickled weights",
         pipe_edited(lambda p: (p / "unet" / "diffusion_pytorch_model.safetensors").rename(p / "unet" / "diffusion_pytorch_model.bin"))),
    Case("model folder", "generation VAE damaged", "models:\n  teacher: {source: 'toy:teacher', generation: {vae: '@case/pipe/vae'}}\n  base_student: {source: 'toy:student'}\n",
         "config key 'models.teacher.generation.vae': @case/pipe/vae/config.json is not valid JSON (damaged or truncated)",
         pipe_damaged("vae/config.json", "empty")),
    Case("model folder", "CLIP folder without weights", "metrics: {clip_model: '@case/pipe/text_encoder'}\n",
         "config key 'metrics.clip_model': model folder @case/pipe/text_encoder has no safetensors weights",
         pipe_edited(rm("text_encoder/model.safetensors"))),
    # ---- checkpoints: a training job (damage is recovered: the job succeeds and says what it set aside)
    Case("checkpoint", "checkpoints folder is a file", None, "@case/run/checkpoints is a file, where the training run needs "
         "its checkpoints folder; move or delete it", write("run/checkpoints", "x"), command="train"),
    Case("checkpoint", "run folder is a file", None, "@case/run is a file, where the training run needs its run folder",
         write("run", "x"), command="train"),
    Case("checkpoint", "newest weights flipped", None, "checkpoint @case/run/checkpoints/step-00000006 is damaged",
         checkpoints(lambda r: damage(r / "checkpoints" / "step-00000006" / "trainable.safetensors", "flipped")),
         command="train", returncode=0, resumed="toy: resuming from @case/run/checkpoints/step-00000004 (step 4 of 6)"),
    Case("checkpoint", "newest optimizer state truncated", None, "step-00000006 is damaged",
         checkpoints(lambda r: damage(r / "checkpoints" / "step-00000006" / "optimizer.bin", "truncated")), command="train", returncode=0,
         resumed="toy: resuming from @case/run/checkpoints/step-00000004 (step 4 of 6)"),
    Case("checkpoint", "newest trainer.json emptied", None, "step-00000006 is damaged",
         checkpoints(lambda r: damage(r / "checkpoints" / "step-00000006" / "trainer.json", "empty")), command="train", returncode=0,
         resumed="toy: resuming from @case/run/checkpoints/step-00000004 (step 4 of 6)"),
    Case("checkpoint", "every checkpoint damaged", None, "step-00000002 is damaged",
         checkpoints(lambda r: [damage(p / "loss_rows.parquet", "corrupt") for p in (r / "checkpoints").glob("step-*")]),
         command="train", returncode=0, resumed="toy: no intact checkpoint in @case/run/checkpoints; starting afresh"),
]
CASES = {c.id: c for c in CASES}


#: Cases that stay real Snakemake runs (one per kind the workflow checks, and the hub ids, which
#: find the Hugging Face cache through the environment): each must stop before any job starts.
SNAKEMAKE_RUNS = {"config: unknown key", "config: hub id not cached, offline", "config: hub dataset not cached, offline",
                  "command line: --config unknown key", "data folder: image folder missing",
                  "model folder: U-Net weights truncated"}


def _filled(text: str, case: Path, assets: Path) -> str:
    return (text.replace("@captions", str(case / "captions" / "img")).replace("@images", str(case / "images"))
            .replace("@case", str(case)))


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def _runner(case: Case) -> str:
    if case.command == "snakemake":
        return "snakemake" if case.id in SNAKEMAKE_RUNS else "in-process"
    return case.command


def _arguments(case: Case, folder: Path, assets: Path) -> tuple[list[str], str | None]:
    """The case's command-line arguments, placeholders filled, and its config file (bad.yaml, written
    into the case's folder), if it has one."""
    args = [_filled(a, folder, assets) for a in case.args]
    if case.config is None:
        return args, None
    (folder / "bad.yaml").write_text(_filled(case.config, folder, assets))
    return args, str(folder / "bad.yaml")


def _run(case: Case, folder: Path, assets: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(assets / "hf_cache"), **case.env}
    args, config = _arguments(case, folder, assets)
    if config is not None:
        args = ["--configfile", config, *args] if case.command == "snakemake" else [config, *args]
    if case.command == "snakemake":  # a real run: the checks must stop it before any job starts
        cmd = [*SNAKEMAKE, "--cores", "1", "--directory", str(folder), *args]
        cwd = ROOT
    elif case.command == "check":
        cmd = [sys.executable, "-m", "kd_core.check", "--schema", str(ROOT / "config" / "schema.yaml"), *args]
        cwd = folder
    else:
        code = f"from tests.workflow.test_bad_inputs import toy_run; toy_run(__import__('pathlib').Path({str(folder / 'run')!r}))"
        cmd, cwd = [sys.executable, "-c", code], ROOT
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _check_in_process(case: Case, folder: Path, assets: Path) -> subprocess.CompletedProcess:
    """The workflow's checks of a ``snakemake --configfile bad.yaml [--config ...]`` run, in this process:
    ``kd_core.check`` on the files Snakemake would read (bad.yaml alone, else the default config), in
    the case's folder (Snakemake's --directory), with the case's Hugging Face cache."""
    from huggingface_hub import constants

    from kd_core import check

    args, config = _arguments(case, folder, assets)
    argv = [*([config] if config else []), *args, "--schema", str(ROOT / "config" / "schema.yaml")]
    out, err, cwd, cache = io.StringIO(), io.StringIO(), os.getcwd(), constants.HF_HUB_CACHE
    try:
        os.chdir(folder)
        constants.HF_HUB_CACHE = str(assets / "hf_cache")
        with redirect_stdout(out), redirect_stderr(err):
            code = check.main(argv)
    except Exception:  # noqa: BLE001 - what a user would see: a traceback, which the test reports
        import traceback

        code, err = 99, io.StringIO(err.getvalue() + traceback.format_exc())
    finally:
        os.chdir(cwd)
        constants.HF_HUB_CACHE = cache
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case prepared and run (the subprocess ones two at a time): case id -> (its folder, the
    finished process, its files before the run, after it)."""
    from kd_core.models.tiny import build_tiny_sd

    assets = tmp_path_factory.mktemp("assets")
    build_tiny_sd(assets / "pipe")
    (assets / "hf_cache").mkdir()
    toy_run(assets / "undamaged")  # the run every resumed checkpoint case must end equal to
    folders, before, procs = {}, {}, {}
    for i, case in enumerate(CASES.values()):
        folders[case.id] = folder = tmp_path_factory.mktemp(f"case{i:03d}")
        if case.prepare is not None:
            case.prepare(folder, assets)
        before[case.id] = _files(folder)
    for case in CASES.values():
        if _runner(case) == "in-process":
            procs[case.id] = _check_in_process(case, folders[case.id], assets)
    rest = [c for c in CASES.values() if c.id not in procs]
    with ThreadPoolExecutor(2) as pool:
        procs.update(zip([c.id for c in rest], pool.map(lambda c: _run(c, folders[c.id], assets), rest), strict=True))
    return {k: (folders[k], procs[k], before[k], _files(folders[k])) for k in CASES}, assets


def test_the_table_covers_every_kind_with_60_cases():
    kinds = pd.Series([c.kind for c in CASES.values()]).value_counts()
    assert len(CASES) >= 60 and set(kinds.index) == {"config", "command line", "data folder", "model folder", "checkpoint"}


def test_a_handful_of_cases_are_real_snakemake_runs_one_per_kind():
    kinds = {CASES[c].kind for c in SNAKEMAKE_RUNS}
    assert SNAKEMAKE_RUNS <= set(CASES) and kinds == {"config", "command line", "data folder", "model folder"}


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(outcomes, case_id):
    case = CASES[case_id]
    results, assets = outcomes
    folder, proc, files_before, files_after = results[case_id]
    output = proc.stdout + proc.stderr
    assert proc.returncode == case.returncode, output
    assert "Traceback" not in output, output
    expect = case.expect.replace("@case", str(folder))
    if case.returncode:
        lines = [ln for ln in output.splitlines() if ln.strip() and not ln.startswith(BANNER)]
        assert len(lines) == 1, output
        assert lines[0].startswith(("config error: ", "error: ")) and expect in lines[0], output
        if _runner(case) == "snakemake":  # stopped before any job: nothing of the run, not even its folder
            assert not (folder / "results").exists(), output
            files_after = {k: v for k, v in files_after.items() if not k.startswith(".snakemake")}
        assert files_after == {**files_before, **({"bad.yaml": files_after["bad.yaml"]} if "bad.yaml" in files_after else {})}
    else:  # a damaged checkpoint: set aside with one warning line, the job resumes from an intact one
        warnings = [ln for ln in output.splitlines() if "is damaged" in ln or "starting afresh" in ln]
        assert any(expect in ln for ln in warnings), output
        assert len([ln for ln in warnings if "is damaged" in ln]) == len(list((folder / "run" / "checkpoints").glob("damaged-*")))
        assert case.resumed.replace("@case", str(folder)) in output.splitlines(), output
        pd.testing.assert_frame_equal(pd.read_parquet(folder / "run" / "loss.parquet"),
                                      pd.read_parquet(assets / "undamaged" / "loss.parquet"))
