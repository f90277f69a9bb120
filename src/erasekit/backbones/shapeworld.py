"""The ShapeWorld backbone: MiniLM text encoder + the shipped 16x16-latent UNet (specs/shapeworld.md).

It exposes the embedded world (``world``: renderer, caption grammar, classifier, tasks; backbones/world.py) and
offers white-box learned-token access (``LearnedTokens``, backbones/base.py) to the soft-prompt and inversion
attacks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from torch import Tensor, nn

from erasekit.backbones.base import (
    SamplingDefaults,
    TokenSegment,
    check_generate_args,
    filtered_prompts,
    generate_in_batches,
    linear_modules,
    unknown_token_id,
)
from erasekit.errors import UserError
from erasekit.world.assets import denoiser_dir
from erasekit.world.denoiser import (
    LATENT_FACTOR,
    SAMPLING_GUIDANCE,
    SAMPLING_STEPS,
    images_to_latents,
    latents_to_images,
    sample_scheduler,
    train_scheduler,
    training_target,
)
from erasekit.world.shapeworld import SHAPEWORLD, ShapeWorld
from erasekit.world.text_encoder import MiniLMEncoder, shared_encoder


def has_cpp_compiler() -> bool:
    """torch.compile's CPU code generation builds C++ with $CXX (default: c++ or g++)."""
    return any(shutil.which(name) for name in (os.environ.get("CXX", ""), "c++", "g++") if name)


class ShapeWorldBackbone:
    family = "shapeworld"
    world: ShapeWorld = SHAPEWORLD

    def __init__(self, unet: UNet2DConditionModel, encoder: MiniLMEncoder, source: str = "shapeworld"):
        self.unet = unet.eval().requires_grad_(False)
        self.encoder = encoder
        self.source = source
        self.compiled: nn.Module | None = None  # set by compile_denoiser()
        self.prompt_filter = None  # set while a prompt-filter edit is applied

    def compile_denoiser(self) -> None:
        """Sample through ``torch.compile`` of the UNet: ~40 s once per batch shape (the inductor cache
        keeps it), then 1.1-1.5x faster on the 2-core CPU. Its weights stay the module's, so an edit
        applied or removed later takes effect."""
        if not has_cpp_compiler():
            raise UserError("--compile needs a C++ compiler for torch.compile (e.g. apt install g++)")
        self.compiled = torch.compile(self.unet)

    @classmethod
    def load(
        cls, folder: Path | None = None, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> ShapeWorldBackbone:
        """The UNet of ``folder`` (default: the shipped one) and the MiniLM encoder, on ``device`` in ``dtype``
        (default: CPU, float32; the process's shared encoder serves that default)."""
        folder = Path(folder) if folder else denoiser_dir()
        device, dtype = device or torch.device("cpu"), dtype or torch.float32
        unet = UNet2DConditionModel.from_pretrained(str(folder), use_safetensors=True, torch_dtype=dtype)
        on_default = device.type == "cpu" and dtype == torch.float32
        encoder = shared_encoder() if on_default else MiniLMEncoder().to(device=device, dtype=dtype)
        source = str(folder) if folder != denoiser_dir() else "shapeworld"
        return cls(unet.to(device), encoder, source=source)

    def identity(self) -> dict:
        return {"family": self.family, "source": self.source}

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = filtered_prompts(self, prompts)
        if self.encoder.model.device.type == "cpu":
            return self.encoder(prompts)
        return self._encode_on_device(prompts)

    @torch.inference_mode()
    def _encode_on_device(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``MiniLMEncoder.forward`` with the tokens moved to the encoder's device."""
        encoder = self.encoder
        tokens = {k: v.to(encoder.model.device) for k, v in encoder.tokenize(prompts).items()}
        mask = tokens["attention_mask"]
        states = encoder.model(input_ids=tokens["input_ids"], attention_mask=mask).last_hidden_state * mask[..., None]
        pad = encoder.max_tokens - states.shape[1]
        return torch.nn.functional.pad(states, (0, 0, 0, pad)), torch.nn.functional.pad(mask, (0, pad)).bool()

    def tokenizers(self) -> list:
        return [self.encoder.tokenizer]

    def text_layers(self) -> list[tuple[str, nn.Linear]]:
        return linear_modules(self.encoder.model.encoder, prefix="text_encoder.encoder.")

    def text_encoders(self) -> dict[str, nn.Module]:
        return {"text_encoder": self.encoder.model}

    def projectors(self) -> dict[str, nn.Linear]:
        return {
            f"unet.{name}": module
            for name, module in self.unet.named_modules()
            if name.endswith(("attn2.to_k", "attn2.to_v")) and isinstance(module, nn.Linear)
        }

    def embedding_projectors(self) -> dict[str, nn.Linear]:
        return self.projectors()

    def token_segments(self, prompts: list[str]) -> list[TokenSegment]:
        """MiniLM is bidirectional; padding is masked out of cross-attention."""
        self.encoder.tokenize(list(prompts))  # raises PromptTooLongError for an over-long prompt
        ids = self.encoder.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        unknown = unknown_token_id(self.encoder.tokenizer)
        return [TokenSegment(0, self.encoder.max_tokens, ids, False, False, ("text_encoder",), unknown)]

    @torch.inference_mode()
    def denoise(
        self, states: torch.Tensor, mask: torch.Tensor, seeds: list[int], steps: int, guidance: float
    ) -> torch.Tensor:
        """DDIM with classifier-free guidance from per-image seeded noise; returns final latents."""
        scheduler = sample_scheduler()
        scheduler.set_timesteps(steps)
        cfg = self.unet.config
        latents = torch.stack(
            [
                torch.randn(
                    (cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=torch.Generator().manual_seed(s)
                )
                for s in seeds
            ]
        ).to(self.unet.device, self.unet.dtype)
        u_states, u_mask = self.encode([""])  # not cached: an edit may change the text encoder
        n = len(seeds)
        both_states = torch.cat([u_states.expand(n, -1, -1), states])
        both_mask = torch.cat([u_mask.expand(n, -1), mask])
        unet = self.compiled if self.compiled is not None else self.unet
        for t in scheduler.timesteps:
            eps = unet(
                torch.cat([latents, latents]), t, encoder_hidden_states=both_states, encoder_attention_mask=both_mask
            ).sample
            eps_u, eps_c = eps.chunk(2)
            latents = scheduler.step(eps_u + guidance * (eps_c - eps_u), t, latents).prev_sample
        return latents

    def sampling_defaults(self) -> SamplingDefaults:
        """What every ShapeWorld figure was measured with (25 DDIM steps, guidance 5), at the denoiser's image size."""
        side = int(self.unet.config.sample_size) * LATENT_FACTOR
        scheduler = sample_scheduler()
        scheduler_name = f"{type(scheduler).__name__} ({scheduler.config.prediction_type})"
        return SamplingDefaults(SAMPLING_STEPS, SAMPLING_GUIDANCE, side, side, scheduler_name)

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        steps: int | None = None,
        guidance: float | None = None,
        progress: bool = False,
        batch_size: int = 64,
    ) -> np.ndarray:
        check_generate_args(prompts, seeds)
        steps, guidance = self.sampling_defaults().fill(steps, guidance)
        if not prompts:
            return np.zeros((0, 32, 32, 3), np.uint8)
        return generate_in_batches(
            lambda p, s: self._generate_batch(p, s, steps, guidance), list(prompts), list(seeds), batch_size, progress
        )

    def _generate_batch(self, prompts: list[str], seeds: list[int], steps: int, guidance: float) -> np.ndarray:
        states, mask = self.encode(prompts)
        return latents_to_images(self.denoise(states, mask, seeds, steps, guidance).float().cpu()).numpy()

    # --- LearnedTokens (backbones/base.py): white-box access for the soft-prompt and inversion attacks ---

    def word_embeddings(self) -> Tensor:
        return self.encoder.model.embeddings.word_embeddings.weight

    def token_id(self, word: str) -> int:
        return int(self.encoder.tokenizer.convert_tokens_to_ids(word))

    def encode_with_vectors(self, prompts: list[str], vectors: Tensor) -> tuple[Tensor, Tensor]:
        encoder = self.encoder
        tokens = encoder.tokenize(filtered_prompts(self, prompts))
        device = encoder.model.device
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        slots = ids == encoder.tokenizer.mask_token_id
        if not bool((slots.sum(1) == vectors.shape[1]).all()):
            raise ValueError(f"every prompt needs exactly {vectors.shape[1]} slot(s) {encoder.tokenizer.mask_token}")
        embedded = encoder.model.embeddings.word_embeddings(ids)
        placed = torch.zeros_like(embedded)
        placed[slots] = vectors.reshape(-1, vectors.shape[-1]).to(placed.dtype)
        embedded = torch.where(slots[..., None], placed, embedded)
        states = encoder.model(inputs_embeds=embedded, attention_mask=mask).last_hidden_state * mask[..., None]
        pad = encoder.max_tokens - states.shape[1]
        return torch.nn.functional.pad(states, (0, 0, 0, pad)), torch.nn.functional.pad(mask, (0, pad)).bool()

    def denoising_loss(self, states: Tensor, mask: Tensor, images: np.ndarray, gen: torch.Generator) -> Tensor:
        """v-prediction loss at one random timestep per image."""
        latents = images_to_latents(torch.from_numpy(images))
        alphas = train_scheduler().alphas_cumprod
        t = torch.randint(50, 950, (len(latents),), generator=gen)
        noise = torch.randn(latents.shape, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        place = {"device": self.unet.device, "dtype": self.unet.dtype}  # drawn on the CPU, run where the UNet is
        pred = self.unet(
            noisy.to(**place), t.to(self.unet.device), encoder_hidden_states=states, encoder_attention_mask=mask
        ).sample
        return torch.nn.functional.mse_loss(pred.float(), training_target(latents, noise, a).to(pred.device).float())

    def sample_from_states(
        self, states: Tensor, mask: Tensor, seeds: list[int], steps: int, guidance: float, batch: int = 64
    ) -> np.ndarray:
        """DDIM + CFG from given text states, as ``generate``."""
        out = []
        for s in range(0, len(seeds), batch):
            latents = self.denoise(
                states[s : s + batch].detach(), mask[s : s + batch], seeds[s : s + batch], steps, guidance
            )
            out.append(latents_to_images(latents.float().cpu()).numpy())
        return np.concatenate(out) if out else np.zeros((0, 32, 32, 3), np.uint8)
