"""What the adapters for local diffusers model folders (sd, sdxl, sd3) share.

``DiffusersBackbone`` implements the Backbone protocol around a loaded pipeline: loading from a local
folder (no downloads; on the device and in the dtype asked for, CPU float32 by default), prompt-length checks, token
masks, text layers, identity and the seeded, batched ``generate``. A family subclass names its pipeline class,
components and tokenizers, and supplies ``_embeddings`` (what its denoiser consumes) and ``projectors``.

diffusers is imported only when a pipeline is loaded, so importing this module stays cheap.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

import numpy as np
import torch
from torch import nn

from erasekit.backbones.base import (
    SamplingDefaults,
    TokenSegment,
    check_generate_args,
    filtered_prompts,
    generate_in_batches,
    linear_modules,
    unknown_token_id,
)
from erasekit.errors import PromptTooLongError, UserError
from erasekit.utils.io import read_json_object

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


def read_model_index(folder: Path) -> dict:
    """The folder's model_index.json, or a UserError if the folder is missing or is no diffusers folder."""
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"model folder not found: {folder}")
    index = folder / "model_index.json"
    if not index.is_file():
        raise UserError(f"not a diffusers model folder (no model_index.json): {folder}")
    data = read_json_object(index, "model_index.json")
    if not isinstance(data.get("_class_name"), str):
        raise UserError(f"model_index.json names no pipeline class (_class_name): {index}")
    return data


MEMORY_SWITCHES = ("attention-slicing", "vae-tiling", "cpu-offload")
T5 = ("text_encoder_3", "tokenizer_3")  # SD3's T5 encoder and its tokenizer


@dataclass(frozen=True)
class PipelineOptions:
    """How a diffusers pipeline is loaded beyond device and dtype: diffusers' own memory switches (attention
    slicing, VAE tiling, model CPU offload onto a CUDA device), and SD3 without its T5 encoder."""

    memory: tuple[str, ...] = ()
    without_t5: bool = False

    def check(self, family: str | None, device: torch.device | None) -> None:
        """UserError, before anything loads, for a switch this model or device cannot take (``family`` None: not a
        diffusers model)."""
        if unknown := sorted(set(self.memory) - set(MEMORY_SWITCHES)):
            raise UserError(f"--memory {unknown[0]}: choose from {', '.join(MEMORY_SWITCHES)}")
        if family is None and (self.memory or self.without_t5):
            raise UserError("--memory and --without-t5 apply to diffusers models only")
        if self.without_t5 and family != "sd3":
            raise UserError(f"--without-t5: only SD3 has a T5 encoder, not this {family} model")
        if "cpu-offload" in self.memory and (device is None or device.type != "cuda"):
            raise UserError(
                "--memory cpu-offload keeps the model on the CPU and runs each part on a CUDA GPU: "
                "give --device cuda (or auto on a machine with one)"
            )


def apply_memory_switches(pipe: DiffusionPipeline, memory: tuple[str, ...], device: torch.device | None) -> None:
    """diffusers' switches: ``enable_attention_slicing``, the VAE's ``enable_tiling``, ``enable_model_cpu_offload``
    (each component moves to ``device`` while it runs)."""
    if "attention-slicing" in memory:
        pipe.enable_attention_slicing()
    if "vae-tiling" in memory:
        pipe.vae.enable_tiling()
    if "cpu-offload" in memory:
        pipe.enable_model_cpu_offload(device=device)


def _use_safetensors(folder: Path) -> bool | None:
    """True when no pickled weights are present; None lets diffusers fall back per component."""
    return None if any(folder.rglob("*.bin")) else True


def _absent(index: dict) -> dict[str, None]:
    """Components saved as absent ([null, null], e.g. SD3 without T5), to pass explicitly as None."""
    return {
        name: None
        for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and value and value[0] is None
    }


def load_pipeline(
    class_name: str,
    folder: Path,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    options: PipelineOptions = PipelineOptions(),
) -> DiffusionPipeline:
    """Load ``diffusers.<class_name>`` from a local folder only, frozen, on ``device`` in ``dtype`` (default: the CPU
    in float32; a half-precision folder is upcast unless half precision is asked for), with ``options``' memory
    switches (with CPU offload the weights stay on the CPU) and without T5 when asked."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()  # stderr carries one-line errors, not loading bars
    transformers.utils.logging.disable_progress_bar()
    folder = Path(folder)
    index = read_model_index(folder)
    if index["_class_name"] != class_name:
        raise UserError(f"{folder} holds a {index['_class_name']}, not a {class_name}")
    dtype = torch.float32 if dtype is None else dtype
    try:
        pipe = getattr(diffusers, class_name).from_pretrained(
            str(folder),
            local_files_only=True,
            use_safetensors=_use_safetensors(folder),
            torch_dtype=dtype,
            **_absent(index),
            **(dict.fromkeys(T5) if options.without_t5 else {}),
        )
    except (OSError, ValueError) as exc:  # missing or broken component files
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"could not load {class_name} from {folder}: {message}") from exc
    offload = "cpu-offload" in options.memory
    pipe.to(torch.device("cpu") if device is None or offload else device)
    for component in pipe.components.values():
        if isinstance(component, nn.Module):
            _freeze(component, dtype)
    apply_memory_switches(pipe, options.memory, device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _freeze(module: nn.Module, dtype: torch.dtype) -> None:
    """Eval mode, no gradients, floating-point weights in ``dtype`` (whatever the folder saved)."""
    if any(p.is_floating_point() and p.dtype != dtype for p in module.parameters()):
        module.to(dtype)
    module.eval().requires_grad_(False)


def move_pipeline(pipe: DiffusionPipeline, device: torch.device | None, dtype: torch.dtype | None) -> None:
    """Move a pipeline the user holds to ``device`` / ``dtype`` where one is given (None: leave it as it is)."""
    if device is not None or dtype is not None:
        pipe.to(device=device, dtype=dtype)


def check_prompt_lengths(tokenizer, prompts: list[str], limit: int) -> None:
    """Raise PromptTooLongError (a UserError) for the first prompt with more than ``limit`` tokens."""
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    for prompt, n in zip(prompts, lengths, strict=True):
        if n > limit:
            raise PromptTooLongError(
                f"prompt has {n} tokens, more than the encoder's maximum of {limit}: {prompt[:60]!r}"
            )


def token_mask(tokenizer, prompts: list[str], length: int) -> torch.Tensor:
    """(B, length) bool: True at real tokens (BOS/EOS included), False at padding."""
    tokens = tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return tokens["attention_mask"].bool()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (B, H, W, 3) -> uint8, rounded as diffusers' numpy_to_pil does."""
    return (np.asarray(images) * 255).round().clip(0, 255).astype(np.uint8)


def named_linears(module: nn.Module, prefix: str, suffixes: tuple[str, ...]) -> dict[str, nn.Linear]:
    """The nn.Linear submodules whose dotted names end with one of ``suffixes``, names prefixed."""
    return {
        f"{prefix}{name}": m
        for name, m in module.named_modules()
        if name.endswith(suffixes) and isinstance(m, nn.Linear)
    }


class DiffusersBackbone:
    """A Backbone over a diffusers text-to-image pipeline; subclasses fill in the family details."""

    family: ClassVar[str]
    pipeline_class: ClassVar[str]
    denoiser_name: ClassVar[str] = "unet"
    text_encoder_names: ClassVar[tuple[str, ...]] = ("text_encoder",)
    tokenizer_names: ClassVar[tuple[str, ...]] = ("tokenizer",)
    default_batch_size: ClassVar[int] = 4

    def __init__(self, pipe: DiffusionPipeline, source: str, memory: tuple[str, ...] = ()):
        self.pipe = pipe
        self.source = source
        self.memory = memory  # the diffusers memory switches it was loaded with
        self.prompt_filter = None  # set while a prompt-filter edit is applied

    @classmethod
    def load(
        cls,
        folder: Path,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        options: PipelineOptions = PipelineOptions(),
    ) -> Self:
        """Load from a local diffusers folder (model_index.json + component folders) on ``device`` in ``dtype``
        (default: CPU, float32) with ``options``; nothing is downloaded."""
        folder = Path(folder).expanduser().resolve()
        options.check(cls.family, device)
        pipe = load_pipeline(cls.pipeline_class, folder, device, dtype, options)
        return cls(pipe, source=str(folder), memory=options.memory)

    @classmethod
    def wrap(
        cls,
        pipe: DiffusionPipeline,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        memory: tuple[str, ...] = (),
    ) -> Self:
        """The pipeline object a user holds, as it is (its device, dtype and weights; nothing is reloaded), moved
        only to a ``device`` / ``dtype`` given, with the ``memory`` switches given."""
        if cls.pipeline_class not in {c.__name__ for c in type(pipe).__mro__}:
            raise UserError(f"a {type(pipe).__name__} is not a {cls.pipeline_class}")
        PipelineOptions(memory).check(cls.family, device or pipe.device)
        move_pipeline(pipe, None if "cpu-offload" in memory else device, dtype)
        apply_memory_switches(pipe, memory, device or pipe.device)
        source = getattr(pipe, "name_or_path", None) or f"<{type(pipe).__name__} object>"
        return cls(pipe, source=str(source), memory=memory)

    # --- protocol -------------------------------------------------------------------------------------

    def identity(self) -> dict:
        """Family, source, pipeline class, and the text encoders present (an edit fitted with SD3's T5 must not be
        applied to a model loaded without it, nor the other way round)."""
        encoders = "+".join(self.text_encoders())
        return {
            "family": self.family,
            "source": self.source,
            "pipeline_class": type(self.pipe).__name__,
            "text_encoders": encoders,
        }

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings (B, L, D), mask (B, L)): exactly the text states the denoiser consumes.

        mask is True at real tokens (BOS and EOS included) and False at padding. The SD-family
        denoisers get no attention mask from their pipelines: they still consume (attend to) the
        padded positions, so the mask says which positions are prompt tokens, not what is ignored.
        """
        prompts = filtered_prompts(self, prompts)
        if not prompts:  # (0, L, D): shapes from encoding the empty prompt
            states, mask = self.encode([""])
            return states[:0], mask[:0]
        self.check_prompts(prompts)
        return self._embeddings(prompts), self._mask(prompts)

    def text_layers(self) -> list[tuple[str, nn.Linear]]:
        """The text encoders' linear layers in depth order, encoder after encoder, names prefixed."""
        return [item for name, module in self.text_encoders().items() for item in linear_modules(module, f"{name}.")]

    def text_encoders(self) -> dict[str, nn.Module]:
        names = [name for name in self.text_encoder_names if getattr(self.pipe, name, None) is not None]
        return {name: getattr(self.pipe, name) for name in names}

    def projectors(self) -> dict[str, nn.Linear]:
        raise NotImplementedError

    def embedding_projectors(self) -> dict[str, nn.Linear]:
        """Projectors whose input is ``encode()``'s output (all of them for the UNet families)."""
        return self.projectors()

    def token_segments(self, prompts: list[str]) -> list[TokenSegment]:
        """One causal CLIP segment; the UNet attends to every position, padding included."""
        prompts = list(prompts)
        self.check_prompts(prompts)
        tokenizer = self.tokenizers()[0]
        length = int(tokenizer.model_max_length)
        ids = tokenizer(prompts, truncation=True, max_length=length)["input_ids"]
        encoders = tuple(n for n in self.text_encoder_names if n != "text_encoder_3")
        return [TokenSegment(0, length, ids, True, True, encoders, unknown_token_id(tokenizer))]

    def sampling_defaults(self) -> SamplingDefaults:
        """The pipeline class's own defaults for steps and guidance (SD 50 / 7.5, SDXL 50 / 5, SD3 28 / 7), the
        image size of the folder's denoiser and VAE configs (SD 2.x-768: 768, SDXL and SD3: 1024), its scheduler."""
        import diffusers

        # the family's pipeline class, not the object's (a user's subclass may change __call__'s signature)
        call = inspect.signature(getattr(diffusers, self.pipeline_class).__call__).parameters
        scheduler = self.pipe.scheduler
        prediction = scheduler.config.get("prediction_type")
        height, width = self.image_size()
        return SamplingDefaults(
            steps=int(call["num_inference_steps"].default),
            guidance=float(call["guidance_scale"].default),
            height=height,
            width=width,
            scheduler=type(scheduler).__name__ + (f" ({prediction})" if prediction else ""),
        )

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        steps: int | None = None,
        guidance: float | None = None,
        progress: bool = False,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """uint8 images (B, H, W, 3) from the pipeline's own sampler; image i depends only on seeds[i]; steps and
        guidance default to ``sampling_defaults()``."""
        check_generate_args(prompts, seeds)
        steps, guidance = self.sampling_defaults().fill(steps, guidance)
        prompts, seeds = filtered_prompts(self, prompts), [int(s) for s in seeds]
        if not prompts:
            return np.zeros((0, *self.image_size(), 3), np.uint8)
        self.check_prompts(prompts)
        return generate_in_batches(
            lambda p, s: self._generate_batch(p, s, steps, guidance, progress),
            prompts,
            seeds,
            batch_size or self.default_batch_size,
            progress,
        )

    # --- shared details -------------------------------------------------------------------------------

    @property
    def denoiser(self) -> nn.Module:
        return getattr(self.pipe, self.denoiser_name)

    @property
    def device(self) -> torch.device:
        """Where the model computes: with CPU offload, the GPU its parts move to as they run."""
        return self.pipe._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    def image_size(self) -> tuple[int, int]:
        """(H, W) of generated images: the pipelines' default, denoiser sample size x VAE scale factor."""
        side = int(self.denoiser.config.sample_size) * int(self.pipe.vae_scale_factor)
        return side, side

    def tokenizers(self) -> list:
        """The CLIP tokenizers present, in tokenizer_names order."""
        return [t for t in (getattr(self.pipe, n, None) for n in self.tokenizer_names) if t is not None]

    def token_limits(self) -> list[tuple[object, int]]:
        """(tokenizer, maximum token count) pairs that prompts are checked against."""
        return [(t, int(t.model_max_length)) for t in self.tokenizers()]

    def check_prompts(self, prompts: list[str]) -> None:
        """Raise a UserError for a prompt too long for any tokenizer (pipelines would silently truncate)."""
        for tokenizer, limit in self.token_limits():
            check_prompt_lengths(tokenizer, prompts, limit)

    def _mask(self, prompts: list[str]) -> torch.Tensor:
        """Real-token mask over the CLIP positions (union over tokenizers; they share a vocabulary)."""
        masks = [token_mask(t, prompts, int(t.model_max_length)) for t in self.tokenizers()]
        return torch.stack(masks).any(dim=0).to(self.device)

    def _embeddings(self, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def _clip_prefix(self, prompts: list[str], length: int, penultimate: bool) -> torch.Tensor:
        """``encode()``'s states at the first ``length`` positions, from a forward pass over those positions only:
        exact for the causal CLIP encoders, where no position sees a later one. Each encoder's last (or
        ``penultimate``) hidden states, concatenated as the pipeline's ``encode_prompt`` does."""
        prompts = filtered_prompts(self, prompts)
        self.check_prompts(prompts)
        parts = []
        for encoder_name, tokenizer_name in zip(self.text_encoder_names, self.tokenizer_names, strict=False):
            encoder, tokenizer = getattr(self.pipe, encoder_name, None), getattr(self.pipe, tokenizer_name, None)
            if encoder is None or tokenizer is None:
                continue
            tokens = tokenizer(
                prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                return_tensors="pt",
            )  # fmt: skip
            masked = getattr(encoder.config, "use_attention_mask", False)
            mask = tokens.attention_mask[:, :length].to(self.device) if masked else None
            ids = tokens.input_ids[:, :length].to(self.device)
            out = encoder(ids, attention_mask=mask, output_hidden_states=penultimate)
            parts.append(out.hidden_states[-2] if penultimate else out[0])
        return torch.cat(parts, dim=-1)

    def _call_kwargs(self) -> dict:
        """Extra keyword arguments for the pipeline's ``__call__``."""
        return {}

    def _generate_batch(
        self, prompts: list[str], seeds: list[int], steps: int, guidance: float, progress: bool
    ) -> np.ndarray:
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.pipe.set_progress_bar_config(disable=not progress, leave=False)
        with torch.no_grad():
            result = self.pipe(
                prompt=prompts,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generators,
                output_type="np",
                **self._call_kwargs(),
            )
        return to_uint8(result.images)
