import json

import pandas as pd
import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import load_file

from kd_core.errors import KDError
from kd_core.models.bk_configs import SDXL_LEVELS, student_config
from kd_core.world.dataset import WorldDataConfig, make_real_dataset
from kd_core.world.toy import TextEncoderConfig, ToyConfig, VAEConfig, pretrain_toy_base
from kd_core.world.toy_xl import ToyXLConfig, UNetXLConfig, build_unet_xl, pretrain_toy_teacher_xl

PROMPT = "a small red circle at the left on a white background"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_xl")
    make_real_dataset(WorldDataConfig(n_train=64, n_test=16), root / "data")
    cfg = ToyConfig(vae=VAEConfig(channels=(8, 16, 16), steps=3, batch_size=4), text=TextEncoderConfig(hidden_size=16, layers=2, heads=2))
    pretrain_toy_base(root / "data" / "train.parquet", root / "base", root / "vae", cfg)
    return root


def test_the_sdxl_style_teacher_is_an_sdxl_pipeline_with_sdxl_s_layout(base, tmp_path):
    cfg = ToyXLConfig(unet=UNetXLConfig(channels=(8, 16, 16), transformer_depths=(1, 2, 4), steps=3, batch_size=4),
                      text_2=TextEncoderConfig(hidden_size=24, layers=2, heads=2))
    pretrain_toy_teacher_xl(base / "base", base / "data" / "train.parquet", tmp_path / "xl", tmp_path / "run", cfg)
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "xl")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert json.loads((tmp_path / "xl" / "model_index.json").read_text())["force_zeros_for_empty_prompt"] is True
    unet = pipe.unet.config
    assert list(unet.down_block_types) == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert list(unet.transformer_layers_per_block) == [1, 2, 4] and unet.addition_embed_type == "text_time"
    assert unet.cross_attention_dim == 16 + 24  # both encoders' states, concatenated
    assert unet.projection_class_embeddings_input_dim == 6 * 8 + 24  # size ids + the second encoder's pooled
    # the toy base's VAE and first text encoder, unchanged
    for part in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert load_file(tmp_path / "xl" / part).keys() == load_file(base / "base" / part).keys()
        for k, v in load_file(base / "base" / part).items():
            assert torch.equal(load_file(tmp_path / "xl" / part)[k], v), (part, k)
    # what its pipeline samples with: the penultimate states of both encoders, the pooled embedding,
    # zeros for the unconditional half; every SDXL block-KD student derives from its U-Net
    emb, neg, pooled, neg_pooled = pipe.encode_prompt([PROMPT], device=torch.device("cpu"), do_classifier_free_guidance=True)
    assert emb.shape == (1, 16, 40) and pooled.shape == (1, 24) and not neg.any() and not neg_pooled.any()
    out = pipe(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (1, 32, 32, 3)
    for level in SDXL_LEVELS:
        assert student_config(dict(pipe.unet.config), level)["down_block_types"][0] == "DownBlock2D"
    loss = pd.read_parquet(tmp_path / "run" / "loss.parquet")
    assert loss.query("term == 'loss'")["step"].tolist() == [1, 2, 3] and loss["value"].notna().all()


def test_the_sdxl_style_teacher_has_three_stages():
    with pytest.raises(KDError, match="'channels' and 'transformer_depths' need three entries each"):
        build_unet_xl(UNetXLConfig(channels=(8, 16)), 8, 4, 32, 16)
