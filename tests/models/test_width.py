import pytest
import torch
from diffusers import UNet2DConditionModel, UNet2DModel

from kd_core.errors import KDError
from kd_core.models.bk_sdm import SD15_UNET_CONFIG
from kd_core.models.width import build_width_student, parameters_of_config, width_config

SD15 = {**SD15_UNET_CONFIG, "_class_name": "UNet2DConditionModel"}


def toy_teacher():
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
                                layers_per_block=1, norm_num_groups=8, cross_attention_dim=16, attention_head_dim=4)


def test_sd15_widths_are_valid_and_grow():
    counts = []
    for f in (0.01, 0.1, 0.25, 0.5, 0.75, 1.0):
        cfg = width_config(SD15, f)
        ch, g, h = cfg["block_out_channels"], cfg["norm_num_groups"], cfg["attention_head_dim"]
        assert all(c % g == 0 and c % h == 0 for c in ch), (f, ch, g, h)
        counts.append(parameters_of_config(cfg))
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert width_config(SD15, 1.0)["block_out_channels"] == [320, 640, 1280, 1280]
    assert counts[-1] == 859_520_964  # the published SD 1.5 U-Net
    assert width_config(SD15, 0.25)["block_out_channels"] == [96, 160, 320, 320]  # 80 -> nearest multiple of 32, ties up
    assert width_config(SD15, 0.01)["norm_num_groups"] < 32  # groups shrink instead of an error


def test_student_keeps_the_interface_of_the_teacher():
    teacher = toy_teacher()
    x, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.randn(2, 5, 16)
    for f in (0.25, 0.5, 0.75):
        student = build_width_student(teacher, f)
        assert type(student) is UNet2DConditionModel
        assert list(student.config.block_out_channels) == [round(c * f) for c in (32, 64)]
        assert student(x, t, encoder_hidden_states=cond).sample.shape == x.shape
    assert list(build_width_student(teacher, 1.0).config.block_out_channels) == [32, 64]


def test_pixel_ddpm_students():
    teacher = UNet2DModel(sample_size=16, block_out_channels=(32, 64), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                          up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=8,
                          layers_per_block=1)
    x = torch.randn(2, 3, 16, 16)
    small = build_width_student(teacher, 0.25)
    assert type(small) is UNet2DModel and list(small.config.block_out_channels) == [8, 16]
    assert small(x, torch.tensor([3, 7])).sample.shape == x.shape
    tiny = build_width_student(teacher, 0.01)
    assert tiny(x, torch.tensor([3, 7])).sample.shape == x.shape


def test_bad_factor():
    with pytest.raises(KDError, match="width factor 1.5 is out of range"):
        width_config(SD15, 1.5)
