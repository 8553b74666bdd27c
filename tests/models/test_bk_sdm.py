import pytest
import torch
from diffusers import UNet2DConditionModel

from kd_core.errors import KDError
from kd_core.models.bk_sdm import (
    LEVELS,
    SD15_UNET_CONFIG,
    build_student,
    feature_map,
    student_config,
    weight_map,
)
from kd_core.models.params import count_parameters
from kd_core.train.distill import FeatureHooks

SD15 = SD15_UNET_CONFIG
PUBLISHED = {"teacher": 859.5e6, "bk_base": 579.4e6, "bk_small": 482.3e6, "bk_tiny": 323.4e6}


def test_parameter_counts_match_the_published_ones():
    with torch.device("meta"):
        teacher = UNet2DConditionModel(**SD15)
        counts = {"teacher": count_parameters(teacher)}
        for level in LEVELS:
            student = UNet2DConditionModel.from_config(student_config(teacher.config, level))
            counts[level] = count_parameters(student)
            # every student weight has a teacher weight of its shape
            t_state, s_state = teacher.state_dict(), student.state_dict()
            for s_key, t_key in weight_map(student, level).items():
                assert t_state[t_key].shape == s_state[s_key].shape, (level, s_key, t_key)
    for name, published in PUBLISHED.items():
        assert abs(counts[name] - published) / published < 0.01, (name, counts[name])
    assert counts["teacher"] == 859_520_964 and counts["bk_tiny"] == 323_384_964


def test_student_configs():
    base, small, tiny = (student_config(SD15, level) for level in LEVELS)
    assert base["layers_per_block"] == 1 and base["mid_block_type"] == "UNetMidBlock2DCrossAttn"
    assert small["mid_block_type"] is None and small["block_out_channels"] == SD15["block_out_channels"]
    assert tiny["block_out_channels"] == [320, 640, 1280] and tiny["down_block_types"] == ["CrossAttnDownBlock2D"] * 3
    assert tiny["up_block_types"] == ["CrossAttnUpBlock2D"] * 3
    with pytest.raises(KDError, match="layers_per_block >= 2"):
        student_config({**SD15, "layers_per_block": 1}, "bk_small")
    with pytest.raises(KDError, match="same width"):
        student_config({**SD15, "block_out_channels": [320, 640, 1280, 1920]}, "bk_tiny")
    with pytest.raises(KDError, match="unknown BK-SDM student"):
        student_config(SD15, "bk_huge")


def test_weight_map_is_explicit():
    with torch.device("meta"):
        teacher = UNet2DConditionModel(**SD15)
        small = UNet2DConditionModel.from_config(student_config(teacher.config, "bk_small"))
        tiny = UNet2DConditionModel.from_config(student_config(teacher.config, "bk_tiny"))
    m = weight_map(small, "bk_small")
    assert m["down_blocks.1.resnets.0.conv1.weight"] == "down_blocks.1.resnets.0.conv1.weight"
    assert m["up_blocks.1.resnets.1.conv1.weight"] == "up_blocks.1.resnets.2.conv1.weight"  # the middle one dropped
    assert m["up_blocks.2.attentions.1.proj_in.weight"] == "up_blocks.2.attentions.2.proj_in.weight"
    assert m["up_blocks.0.upsamplers.0.conv.weight"] == "up_blocks.0.upsamplers.0.conv.weight"
    assert not any(k.startswith("mid_block") for k in m)
    t = weight_map(tiny, "bk_tiny")
    assert t["up_blocks.0.resnets.0.conv1.weight"] == "up_blocks.1.resnets.0.conv1.weight"  # shifted by one stage
    assert t["up_blocks.2.resnets.1.norm1.weight"] == "up_blocks.3.resnets.2.norm1.weight"
    assert t["up_blocks.1.upsamplers.0.conv.weight"] == "up_blocks.2.upsamplers.0.conv.weight"


@pytest.mark.parametrize("level", LEVELS)
def test_students_copy_the_teacher_and_feature_maps_pair_equal_shapes(tiny_sd15, level):
    teacher = UNet2DConditionModel.from_pretrained(tiny_sd15, subfolder="unet").eval()
    student = build_student(teacher, level).eval()
    t_state = teacher.state_dict()
    for s_key, value in student.state_dict().items():
        assert torch.equal(value, t_state[weight_map(student, level)[s_key]]), s_key
    fmap = feature_map(teacher, student, level)
    th, sh = FeatureHooks(teacher, list(fmap)), FeatureHooks(student, list(fmap.values()))
    x, t, cond = torch.randn(2, 4, 32, 32), torch.tensor([10, 500]), torch.randn(2, 5, 32)
    with torch.no_grad():
        out_t = teacher(x, t, encoder_hidden_states=cond).sample
        out_s = student(x, t, encoder_hidden_states=cond).sample
    tf, sf = th.pop(), sh.pop()
    assert out_s.shape == out_t.shape and len(fmap) >= 3
    for t_name, s_name in fmap.items():
        assert tf[t_name].shape == sf[s_name].shape, (t_name, s_name)
    # fewer parameters, strictly, at every level
    assert count_parameters(student) < count_parameters(teacher)
