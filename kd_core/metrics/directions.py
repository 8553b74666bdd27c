"""Which way is better for every metric the workflow writes: True where larger is better, False
where smaller is, None where neither (the sharpness ratio's ideal is 1). Metrics not listed
(per-attribute accuracies, CLIP score) count as higher-is-better. Kept free of other kd_core
imports, so that figures and statistics do not rerun when a metric's code changes."""

from __future__ import annotations

HIGHER_IS_BETTER: dict[str, bool | None] = {
    # pairwise, against the teacher image of the same prompt and seed
    "mse": False, "psnr": True, "ssim": True, "hist_correlation": True, "hist_bhattacharyya": True,
    "phash_similarity": True, "sharpness_ratio": None, "sharpness_error": False, "colour_similarity": True,
    # distribution
    "fid": False, "kid": False,
    # alignment
    "clip_score": True,
}


def higher_is_better(metric: str) -> bool | None:
    return HIGHER_IS_BETTER.get(metric, True)
