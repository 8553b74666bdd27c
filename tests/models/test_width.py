import pytest
import torch
from diffusers import UNet2DConditionModel, UNet2DModel

from kd_core.errors import KDError
from kd_core.models.bk_sdm import SD15_UNET_CONFIG
from kd_core.models.width import (
    build_inherited_student,
    build_width_student,
    inherit_channels,
    parameters_of_config,
    width_config,
)

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


# --- students inherited from the teacher's channels -----------------------------------------------

def deep_teacher():
    """Two layers per stage (so the decoder concatenates hidden and skip of different widths), GEGLU
    feed-forwards, 4 heads; weights random but fixed."""
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=2,
                                norm_num_groups=8, cross_attention_dim=16, attention_head_dim=4).eval()


def pixel_teacher():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
                       attention_head_dim=8, norm_num_groups=8).eval()


def _inputs(unet):
    torch.manual_seed(1)
    size = unet.config.sample_size
    x = torch.randn(2, unet.config.in_channels, size, size)
    args = (x, torch.tensor([10, 700]))
    if isinstance(unet, UNet2DConditionModel):
        args += (torch.randn(2, 5, unet.config.cross_attention_dim),)
    return args


@pytest.mark.parametrize("make", [deep_teacher, pixel_teacher])
def test_inherited_student_at_full_width_is_the_teacher(make):
    teacher = make()
    student = build_inherited_student(teacher, 1.0).eval()
    with torch.no_grad():
        assert torch.equal(student(*_inputs(teacher)).sample, teacher(*_inputs(teacher)).sample)


@pytest.mark.parametrize("make", [deep_teacher, pixel_teacher])
def test_inherited_student_holds_the_kept_channels(make):
    teacher = make()
    student = UNet2DConditionModel if isinstance(teacher, UNet2DConditionModel) else UNet2DModel
    student = student.from_config(width_config(dict(teacher.config), 0.5)).eval()
    keep = inherit_channels(teacher, student)
    assert sorted(keep) == ([32, 64, 128, 256] if isinstance(teacher, UNet2DConditionModel) else [32, 64, 128])
    assert [len(keep[w]) for w in (32, 64)] == [16, 32]
    t, s = teacher.state_dict(), student.state_dict()
    # a layer's output channels are the next layer's input channels
    assert torch.equal(s["conv_in.weight"], t["conv_in.weight"][keep[32]])
    assert torch.equal(s["down_blocks.0.resnets.0.conv1.weight"],
                       t["down_blocks.0.resnets.0.conv1.weight"][keep[32]][:, keep[32]])
    # the decoder's first resnet reads cat(hidden 64, skip 64); the last one of the 64-wide stage that
    # follows a 32-wide encoder stage reads cat(hidden 64, skip 32) (diffusers' UNet up-block wiring)
    both = torch.cat([keep[64], 64 + keep[64]])
    assert torch.equal(s["up_blocks.0.resnets.0.conv1.weight"], t["up_blocks.0.resnets.0.conv1.weight"][keep[64]][:, both])
    block = "up_blocks.0.resnets.2" if isinstance(teacher, UNet2DConditionModel) else "up_blocks.1.resnets.2"
    assert t[f"{block}.conv1.weight"].shape[1] == 96
    last = torch.cat([keep[64], 64 + keep[32]])
    assert torch.equal(s[f"{block}.conv1.weight"], t[f"{block}.conv1.weight"][keep[64]][:, last])
    assert torch.equal(s[f"{block}.norm1.bias"], t[f"{block}.norm1.bias"][last])
    if isinstance(teacher, UNet2DConditionModel):
        # same 4 heads, each half as wide: every head keeps 8 of its 16 dimensions
        assert (keep[64] // 16).bincount().tolist() == [8, 8, 8, 8]
        # GEGLU: one projection into value and gate halves, each keeps the feed-forward's channels
        geglu = "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"
        assert torch.equal(s[geglu], t[geglu][torch.cat([keep[128], 128 + keep[128]])][:, keep[32]])
    else:
        # heads of width 8: the student keeps 4 whole heads of the 8 of a 64-wide stage
        assert keep[64].view(4, 8).sub(keep[64].view(4, 8)[:, :1]).eq(torch.arange(8)).all()
    with torch.no_grad():
        assert torch.isfinite(student(*_inputs(teacher)).sample).all()


def test_the_most_important_channels_are_kept():
    teacher = deep_teacher()
    strong = torch.tensor([1, 5, 9, 30])
    with torch.no_grad():
        teacher.conv_in.weight[strong] *= 100
    keep = inherit_channels(teacher, UNet2DConditionModel.from_config(width_config(dict(teacher.config), 0.5)))
    assert set(strong.tolist()) <= set(keep[32].tolist())
    weak = UNet2DConditionModel.from_config(width_config(dict(teacher.config), 0.5))
    with torch.no_grad():
        teacher.conv_in.weight[strong] = 0
    assert not set(strong.tolist()) & set(inherit_channels(teacher, weak)[32].tolist())
