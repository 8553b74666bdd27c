"""Distribution metrics: FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) of a model's
images against a reference set, through torchmetrics with a pluggable feature extractor.

Extractors (``FeatureConfig.extractor``):

- ``classifier``: the shapes-world attribute classifier's penultimate features (offline; the
  shapes world's stand-in for Inception).
- ``inception``: torchmetrics' FID InceptionV3 (needs ``torch-fidelity``, which needs torchvision:
  install both on the machines that run real studies). The weights come from a local file
  (``weights``), checked to load with ``torch.load(weights_only=True)`` before use.
- ``clip``: the image embeddings of a CLIP vision model from a hub id (Hugging Face cache) or local
  folder, through ``transformers`` (FD in CLIP space, Kynkaanniemi et al. 2023).

Features are extracted once per image set; FID and KID are then computed by torchmetrics on the
stored features, and a percentile bootstrap over the model's images gives the 95% CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from tqdm.auto import tqdm

from kd_core.errors import ConfigError, KDError
from kd_core.io import load_rgb, write_parquet
from kd_core.models.integrity import check_local_model, check_model_component

DISTRIBUTION_SCHEMA = pa.schema([
    ("model", pa.string()), ("reference", pa.string()), ("split", pa.string()), ("metric", pa.string()),
    ("value", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("n_model", pa.int64()),
    ("n_reference", pa.int64()), ("extractor", pa.string()), ("feature_dim", pa.int64()),
])


@dataclass(frozen=True)
class FeatureConfig:
    extractor: str = "classifier"  # classifier | inception | clip
    model: str | None = None  # classifier folder, Inception weights file, or CLIP hub id / folder
    batch_size: int = 64
    device: str = "cpu"
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    bootstrap: int = 200
    seed: int = 0


class ClassifierFeatures(nn.Module):
    """Penultimate features of the shapes-world attribute classifier; input uint8 (N, 3, H, W)."""

    def __init__(self, model_dir: str | Path):
        super().__init__()
        from kd_core.world.classifier import load_classifier

        self.net = load_classifier(model_dir)
        self.num_features = self.net.heads[next(iter(self.net.heads))].in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x.float() / 127.5 - 1.0)


class CLIPFeatures(nn.Module):
    """CLIP image embeddings (``transformers``), from a hub id or local folder; input uint8 (N, 3, H, W)."""

    def __init__(self, source: str):
        super().__init__()
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        check_local_model(source, "CLIP model", check_model_component)
        try:
            self.net = CLIPVisionModelWithProjection.from_pretrained(source, use_safetensors=True).eval()
            self.processor = CLIPImageProcessor.from_pretrained(source)
        except OSError as exc:
            raise ConfigError(f"CLIP model {source!r} cannot be loaded ({str(exc).splitlines()[0]}); give a local "
                              "folder or a hub id in the Hugging Face cache") from None
        self.num_features = self.net.config.projection_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = self.processor(images=list(x.permute(0, 2, 3, 1).cpu().numpy()), return_tensors="pt")
        return self.net(pixel_values=inputs["pixel_values"].to(self.net.device)).image_embeds


def inception_features(weights: str | None) -> nn.Module:
    """torchmetrics' FID InceptionV3 (2048-d pool features) with weights from a local file."""
    try:
        import torch_fidelity  # noqa: F401
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError:
        raise ConfigError("metrics.features.extractor = inception needs torch-fidelity (and torchvision); install them "
                          "or use extractor: clip / classifier") from None
    if not weights or not Path(weights).is_file():
        raise ConfigError(f"metrics.features.model = {weights!r}: give the local FID Inception weights file "
                          "(pt_inception-2015-12-05-6726825d.pth)")
    try:
        torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: not a plain tensor file
        raise ConfigError(f"Inception weights {weights!r} do not load as plain tensors ({type(exc).__name__}); "
                          "refusing to unpickle them") from None
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights)
    net.num_features = 2048
    return net


def build_extractor(cfg: FeatureConfig) -> nn.Module:
    if cfg.extractor == "classifier":
        if not cfg.model:
            raise ConfigError("metrics.features.extractor = classifier needs the shapes world (world.enabled: true)")
        return ClassifierFeatures(cfg.model)
    if cfg.extractor == "clip":
        if not cfg.model:
            raise ConfigError("metrics.features.extractor = clip needs metrics.features.model (a CLIP hub id or folder)")
        return CLIPFeatures(cfg.model)
    if cfg.extractor == "inception":
        return inception_features(cfg.model)
    raise ConfigError(f"metrics.features.extractor = {cfg.extractor!r}: use classifier, inception or clip")


@torch.no_grad()
def extract_features(extractor: nn.Module, files: list[str | Path], batch_size: int = 64, size: int | None = None,
                     device: str = "cpu", desc: str = "features") -> torch.Tensor:
    """Features (N, D) in float64 of image files (uint8 RGB, resized to ``size`` if given)."""
    if not files:
        raise KDError("no images to extract features from")
    extractor = extractor.to(device).eval()
    out = []
    for i in tqdm(range(0, len(files), batch_size), desc=desc, unit="batch"):
        batch = np.stack([load_rgb(f, (size, size) if size else None) for f in files[i : i + batch_size]])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(device)
        out.append(extractor(x).double().cpu())
    return torch.cat(out)


class _Stored(nn.Module):
    """Hands stored features to torchmetrics unchanged."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class KID:
    """KID (Binkowski et al. 2018) of one model's features against a reference's: the unbiased MMD^2
    with the kernel (x.y / d + coef)^degree, averaged over random subsets of each set.

    torchmetrics' ``KernelInceptionDistance``, with the same subsets (drawn from torch's global
    generator in the same order) and the same value to float rounding, but the kernel matrices of
    the whole sets are computed once (up to ``MAX_PRECOMPUTED`` features a set) and every subset's
    sums, for every bootstrap resample of the model's features (``rows``), are read from them:
    the bootstrap's hundreds of KIDs then cost little more than one.
    """

    MAX_PRECOMPUTED = 4096

    def __init__(self, model_feats: torch.Tensor, ref_feats: torch.Tensor, degree: int = 3, coef: float = 1.0,
                 ref_cache: dict | None = None):
        """``ref_cache``: a dict shared by the KIDs of one reference set (of one model-set size): the
        reference's kernel sums over a subset depend on the subset alone, and every model drawn with
        the same seed draws the same subsets."""
        self.x, self.r = model_feats, ref_feats
        self.ref_cache = {} if ref_cache is None else ref_cache
        self.gamma, self.degree, self.coef = 1.0 / ref_feats.shape[1], degree, coef
        self.full = max(len(model_feats), len(ref_feats)) <= self.MAX_PRECOMPUTED
        if self.full:
            self.k_rr, self.k_xx, self.k_rx = (self.kernel(a, b) for a, b in
                                               ((ref_feats, ref_feats), (model_feats, model_feats), (ref_feats, model_feats)))

    def kernel(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.transpose(-1, -2) * self.gamma + self.coef) ** self.degree

    def __call__(self, subset_size: int = 1000, subsets: int = 100, rows: torch.Tensor | None = None) -> float:
        """Mean KID over ``subsets``; ``rows``: the model features to use (a bootstrap resample), else all."""
        rows = torch.arange(len(self.x)) if rows is None else rows
        size = min(subset_size, len(rows), len(self.r))
        ri, xi = zip(*[(torch.randperm(len(self.r))[:size], rows[torch.randperm(len(rows))[:size]])
                       for _ in range(subsets)], strict=True)
        ri, xi = torch.stack(ri), torch.stack(xi)  # (subsets, size)
        if self.full:
            # The sums over each subset's kernel block. The model's subsets are drawn from its (at most
            # a few thousand) features, often with repeats (a bootstrap resample): its blocks are sums
            # weighted by how often each feature was drawn (counts @ K), at no gather; the reference's
            # are gathered (torch.take with flat indices: 4x faster than k[i[:, :, None], j[:, None, :]])
            # once per subset draw and kept in ref_cache.
            counts = torch.zeros(subsets, len(self.x), dtype=self.k_xx.dtype).scatter_add_(
                1, xi, torch.ones(xi.shape, dtype=self.k_xx.dtype))
            xx = ((counts @ self.k_xx) * counts).sum(1) - counts @ self.k_xx.diagonal()
            rx = (self.k_rx @ counts.T).T.gather(1, ri).sum(1)
            key = (len(self.r), size, ri.numpy().tobytes())
            if key not in self.ref_cache:
                k_rr = torch.take(self.k_rr, ri[:, :, None] * self.k_rr.shape[1] + ri[:, None, :])
                self.ref_cache[key] = k_rr.sum((1, 2)) - k_rr.diagonal(dim1=1, dim2=2).sum(1)
            off_diag, cross = self.ref_cache[key] + xx, rx
        else:
            r, x = self.r[ri], self.x[xi]
            k_rr, k_xx, k_rx = self.kernel(r, r), self.kernel(x, x), self.kernel(r, x)
            off_diag = (k_rr.sum((1, 2)) - k_rr.diagonal(dim1=1, dim2=2).sum(1)
                        + k_xx.sum((1, 2)) - k_xx.diagonal(dim1=1, dim2=2).sum(1))
            cross = k_rx.sum((1, 2))
        mmd = off_diag / (size * (size - 1)) - 2 * cross / size**2
        return float(mmd.mean())


def fid_kid(model_feats: torch.Tensor, ref_feats: torch.Tensor, subset_size: int = 1000,
            subsets: int = 100, seed: int = 0, rows: torch.Tensor | None = None, kid: KID | None = None) -> dict[str, float]:
    """FID (computed by torchmetrics) and KID (:class:`KID`, mean over subsets) of two feature sets;
    ``rows``: a resample of the model's features (indices), ``kid``: the pair's :class:`KID`, if made."""
    x = model_feats if rows is None else model_feats[rows]
    fid = FrechetInceptionDistance(feature=_Stored(x.shape[1]), reset_real_features=False)
    fid.update(ref_feats, real=True)
    fid.update(x, real=False)
    torch.manual_seed(seed)  # KID draws its subsets from torch's global generator, as torchmetrics' does
    kid = kid or KID(model_feats, ref_feats)
    return {"fid": float(fid.compute()), "kid": kid(subset_size, subsets, rows)}


def feature_moments(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of a feature set, computed as torchmetrics' FID does (float64 sums)."""
    f = feats.double()
    n = len(f)
    mean = f.sum(0) / n
    return mean, (f.T @ f - n * torch.outer(mean, mean)) / (n - 1)


def _psd_sqrt(cov: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(cov)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


class FrechetReference:
    """FID of many feature sets against one reference (a bootstrap's hundreds): the formula of
    torchmetrics' FID, ||mu_r - mu_x||^2 + tr(S_r) + tr(S_x) - 2 tr sqrt(S_r S_x), with the last
    trace taken as the sum of the square roots of the eigenvalues of the symmetric S_r^1/2 S_x S_r^1/2
    (the same eigenvalues as S_r S_x; a symmetric solver and the reference's square root computed
    once: 3x faster than torchmetrics' general eigvals per call, equal to 1e-6 relative). Float64, as torchmetrics."""

    def __init__(self, ref_feats: torch.Tensor):
        self.mean, cov = feature_moments(ref_feats)
        self.trace, self.sqrt = cov.trace(), _psd_sqrt(cov)

    def __call__(self, feats: torch.Tensor) -> float:
        mean, cov = feature_moments(feats)
        root = torch.linalg.eigvalsh(self.sqrt @ cov @ self.sqrt).clamp(min=0).sqrt().sum()
        return float((self.mean - mean).square().sum() + self.trace + cov.trace() - 2 * root)


def _bias_corrected_ci(point: float, boots: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval shifted by the bootstrap estimate of the bias (mean - point).

    Resampling with replacement duplicates images, which inflates FID and KID; the shift takes that
    bias out (Efron & Tibshirani 1993, ch. 10).
    """
    if len(boots) == 0:
        return float("nan"), float("nan")
    bias = float(np.mean(boots)) - point
    a = (1 - level) / 2
    return float(np.quantile(boots, a)) - bias, float(np.quantile(boots, 1 - a)) - bias


def fid_kid_with_cis(x: torch.Tensor, r: torch.Tensor, cfg: FeatureConfig, rng: np.random.Generator,
                     frechet: FrechetReference | None = None, ref_cache: dict | None = None) -> dict[str, tuple[float, float, float]]:
    """FID and KID of model features ``x`` against reference features ``r``: metric -> (value, 95% CI
    low, high), the CI a percentile bootstrap over the model's images (``cfg.bootstrap`` resamples
    drawn from ``rng``) shifted by the bootstrap's estimate of the bias. ``frechet`` and ``ref_cache``:
    the reference's precomputed parts, shared by the models compared with it."""
    frechet = frechet or FrechetReference(r)
    kid = KID(x, r, ref_cache=ref_cache)
    point = fid_kid(x, r, cfg.kid_subset_size, cfg.kid_subsets, cfg.seed, kid=kid)
    boots = []
    for b in range(cfg.bootstrap):  # as fid_kid(x, r, ..., seed + b + 1, rows, kid), faster
        sample = torch.from_numpy(rng.integers(0, len(x), len(x)))
        torch.default_generator.manual_seed(cfg.seed + b + 1)  # KID's subsets: the global generator
        boots.append({"fid": frechet(x[sample]), "kid": kid(cfg.kid_subset_size, cfg.kid_subsets, sample)})
    return {metric: (value, *_bias_corrected_ci(value, np.array([b[metric] for b in boots]))) for metric, value in point.items()}


def distribution_metrics(model_sets: dict[str, list[str | Path]], references: dict[str, list[str | Path]],
                         cfg: FeatureConfig, out_path: str | Path | None = None, split: str = "eval",
                         size: int | None = None) -> pd.DataFrame:
    """FID and KID of every model's image set against every reference set, with bootstrap 95% CIs.

    ``model_sets`` and ``references`` map names to image files; a model is not compared with itself.
    """
    extractor = build_extractor(cfg)
    feats = {name: extract_features(extractor, files, cfg.batch_size, size, cfg.device, desc=f"features {name}")
             for name, files in {**references, **model_sets}.items()}
    rng = np.random.default_rng(cfg.seed)
    frechet = {ref: FrechetReference(feats[ref]) for ref in references}
    ref_caches: dict[str, dict] = {}
    rows = []
    for ref in references:
        for model in model_sets:
            if model == ref:
                continue
            x, r = feats[model], feats[ref]
            estimates = fid_kid_with_cis(x, r, cfg, rng, frechet[ref], ref_caches.setdefault(ref, {}))
            rows += [{"model": model, "reference": ref, "split": split, "metric": metric, "value": value, "ci_low": lo,
                      "ci_high": hi, "n_model": len(x), "n_reference": len(r), "extractor": cfg.extractor,
                      "feature_dim": x.shape[1]} for metric, (value, lo, hi) in estimates.items()]
    out = pd.DataFrame(rows, columns=DISTRIBUTION_SCHEMA.names)
    if out_path is not None:
        write_parquet(out, out_path, DISTRIBUTION_SCHEMA, "metrics/distribution",
                      {"extractor": cfg.extractor, "extractor_model": cfg.model, "resize": size,
                       "kid": {"subset_size": cfg.kid_subset_size, "subsets": cfg.kid_subsets, "degree": 3},
                       "bootstrap": cfg.bootstrap,
                       "ci": "percentile 95% over model images resampled with replacement, shifted by the bootstrap bias",
                       "seed": cfg.seed})
    return out



IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def folder_images(folder: str | Path) -> list[Path]:
    """Image files of a folder (recursively), sorted; a one-line error when there are none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"real-image folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"real-image folder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def manifest_images(manifest: str | Path, split: str) -> list[Path]:
    man = pd.read_parquet(manifest)
    return [Path(manifest).parent / f for f in man.loc[man["split"] == split, "file"]]


def evaluate_distributions(manifests: dict[str, str | Path], cfg: FeatureConfig, out_path: str | Path,
                           real: list[str | Path] | None = None, reference: str = "teacher",
                           split: str = "eval") -> pd.DataFrame:
    """FID / KID of every model's ``split`` images against the real images (if any) and the reference model's."""
    sets = {m: manifest_images(p, split) for m, p in manifests.items()}
    refs = {"real": list(real)} if real else {}
    if reference in sets:
        refs[reference] = sets[reference]
    if not refs:
        raise KDError(f"no reference set for FID / KID: give real images or a {reference!r} model")
    size = None
    if cfg.extractor != "classifier":  # one size for every set: the reference model's images
        size = load_rgb(next(iter(refs.values()))[0]).shape[0]
    return distribution_metrics(sets, refs, cfg, out_path, split, size)
