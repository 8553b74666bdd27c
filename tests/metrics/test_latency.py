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
