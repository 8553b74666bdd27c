"""FLOP counts of kd_core.metrics.latency on the CPU: attention is counted there too."""

import torch
import torch.nn.functional as F

from kd_core.metrics.latency import count_flops


def test_cpu_attention_is_counted_forward_and_backward():
    # torch's own FlopCounterMode counts 0 for scaled_dot_product_attention's CPU kernel
    b, h, n, d = 2, 4, 256, 32
    q = torch.randn(b, h, n, d, requires_grad=True)
    forward = 2 * 2 * b * h * n * n * d  # QK^T and PV, multiply-add = 2
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == forward
    both = count_flops(lambda: F.scaled_dot_product_attention(q, q, q).sum().backward())
    assert both == forward + 5 * forward // 2  # backward: the five products of flash attention's backward
    with torch.inference_mode():  # and equal to the same attention written out as matmuls
        manual = count_flops(lambda: torch.softmax(q @ q.transpose(-1, -2) / d**0.5, -1) @ q)
    assert manual == forward


def test_step_latency_of_an_sdxl_teacher_and_its_block_removed_student(tiny_sdxl_layout, tmp_path):
    # SDXL's U-Net needs the pooled embedding and the size ids at every step: without them it raises
    from diffusers import UNet2DConditionModel

    from kd_core.metrics.latency import LatencyConfig, denoiser_latency
    from kd_core.models.bk_sdm import build_student

    teacher = UNet2DConditionModel.from_pretrained(tiny_sdxl_layout, subfolder="unet")
    build_student(teacher, "koala_700m").save_pretrained(tmp_path / "koala_700m")
    table = denoiser_latency(str(tiny_sdxl_layout), {"koala_700m": str(tmp_path / "koala_700m")}, {},
                             LatencyConfig(batch_sizes=(1,), rounds=3, warmup=0, device="cpu", guidance_scale=2.0), n_boot=50)
    t = table.set_index("model")
    assert (t["step_ms"] > 0).all() and t.loc["teacher", "ratio_teacher"] == 1.0
    assert t.loc["koala_700m", "params"] < t.loc["teacher", "params"] and t.loc["koala_700m", "gflops"] < t.loc["teacher", "gflops"]
