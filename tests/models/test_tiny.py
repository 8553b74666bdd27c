import torch
from diffusers import DiffusionPipeline

from kd_core.models.loading import load_pipeline


def test_tiny_pipelines_load_with_the_real_classes(tiny_sd, tiny_sdxl):
    sd = DiffusionPipeline.from_pretrained(tiny_sd)
    xl = DiffusionPipeline.from_pretrained(tiny_sdxl)
    assert type(sd).__name__ == "StableDiffusionPipeline"
    assert type(xl).__name__ == "StableDiffusionXLPipeline"
    assert xl.unet.config.addition_embed_type == "text_time"
    assert xl.text_encoder_2.config.projection_dim * 1 + 6 * 8 == xl.unet.config.projection_class_embeddings_input_dim


def test_load_pipeline_swaps_scheduler_and_never_clips(tiny_sd):
    pipe = load_pipeline(str(tiny_sd), torch.device("cpu"), torch.float32, scheduler="ddpm")
    assert type(pipe.scheduler).__name__ == "DDPMScheduler"
    assert pipe.scheduler.config.clip_sample is False
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
