"""Tiny random diffusers pipelines (SD 1.x, SDXL, SD3) built from configs in memory, for tests.

Nothing is downloaded: the CLIP tokenizer is a byte-level vocabulary with no merges (one token per
character), and the models have hidden sizes of 32 or less and one or two layers. Each ``build_*``
function saves its pipeline with ``save_pretrained(safe_serialization=True)`` and returns the folder.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 32  # tokenizer model_max_length (77 in real CLIP); one token per character here
T5_MAX_TOKENS = 512  # as in SD3's T5 tokenizer; the pipeline uses max_sequence_length (256) of them
TEXT_DIM = 32


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def byte_level_vocab() -> dict[str, int]:
    """The 256 byte characters, their end-of-word variants, then BOS and EOS (514 tokens)."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}


def tiny_clip_tokenizer(max_tokens: int = MAX_TOKENS) -> CLIPTokenizer:
    """A CLIP tokenizer loaded from vocab.json and an empty merges.txt written to a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "vocab.json").write_text(json.dumps(byte_level_vocab()), encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(str(folder), model_max_length=max_tokens)


def tiny_t5_tokenizer(max_tokens: int = T5_MAX_TOKENS) -> T5Tokenizer:
    """A unigram T5 tokenizer over single characters ("▁" marks word starts), built from a list in memory."""
    chars = string.ascii_letters + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(c, -3.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_tokens)


def _clip_config(tokenizer: CLIPTokenizer, layers: int = 3) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=37,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=TEXT_DIM,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu",
    )


def _save(pipe, folder: Path) -> Path:
    folder = Path(folder)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def _tiny_unet(**config) -> UNet2DConditionModel:
    """A two-level UNet on 16x16 latents; ``config`` adds the family's conditioning settings."""
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        **config,
    )


def build_sd(folder: Path, seed: int = 0) -> Path:
    """SD 1.x: UNet2DConditionModel (32x32 images), AutoencoderKL, CLIPTextModel, DDIM."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    unet = _tiny_unet(
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=_tiny_vae(),
        text_encoder=CLIPTextModel(_clip_config(tokenizer)),
        tokenizer=tokenizer,
        scheduler=DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, folder)


def build_sdxl(folder: Path, seed: int = 0) -> Path:
    """SDXL: CLIPTextModel + CLIPTextModelWithProjection, UNet with "text_time" added conditioning."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    time_dim = 8
    unet = _tiny_unet(
        cross_attention_dim=2 * TEXT_DIM,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=TEXT_DIM + 6 * time_dim,
        norm_num_groups=4,
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        vae=_tiny_vae(),
        text_encoder=CLIPTextModel(_clip_config(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(tokenizer)),
        tokenizer_2=tiny_clip_tokenizer(),
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
    )
    return _save(pipe, folder)


def build_sd3(folder: Path, seed: int = 0, t5: bool = False) -> Path:
    """SD3: SD3Transformer2DModel + two CLIPTextModelWithProjection; a tiny T5 encoder only if ``t5``."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    tokenizer_3 = tiny_t5_tokenizer() if t5 else None
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=2 * TEXT_DIM,
        caption_projection_dim=32,
        pooled_projection_dim=2 * TEXT_DIM,
        pos_embed_max_size=16,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        vae=_tiny_vae(shift_factor=0.0609, scaling_factor=1.5035),
        text_encoder=CLIPTextModelWithProjection(_clip_config(tokenizer)),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(tokenizer)),
        tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=_tiny_t5(tokenizer_3) if t5 else None,
        tokenizer_3=tokenizer_3,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    return _save(pipe, folder)


def build_sd3_t5(folder: Path, seed: int = 0) -> Path:
    """SD3 with a three-layer T5 encoder (text_encoder_3) and its tokenizer."""
    return build_sd3(folder, seed, t5=True)


def _tiny_t5(tokenizer: T5Tokenizer) -> T5EncoderModel:
    """Three-layer T5 encoder whose width is the tiny SD3 joint_attention_dim."""
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=2 * TEXT_DIM,
        d_kv=8,
        d_ff=37,
        num_layers=3,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config)


def _tiny_vae(**extra) -> AutoencoderKL:
    """Two-level AutoencoderKL (downsampling factor 2) with 4 latent channels."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
        **extra,
    )


BUILDERS = {"sd": build_sd, "sdxl": build_sdxl, "sd3": build_sd3, "sd3_t5": build_sd3_t5}
