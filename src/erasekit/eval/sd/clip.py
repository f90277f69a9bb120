"""CLIP from a local folder (never the hub) for the Stable Diffusion protocol: CLIP scores of images against their
prompts, image and text embeddings, and zero-shot classification among a prompt set's concept names (its judge
of attack images, ``ClipJudge``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from erasekit.errors import UserError, first_line
from erasekit.eval.prompts import PromptRow


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 while loading (``local_files_only`` is what actually keeps the hub out)."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def _as_tensor(features: Any) -> torch.Tensor:
    """transformers 5 returns a ModelOutput (projected features in ``pooler_output``), 4.x a tensor."""
    return features if isinstance(features, torch.Tensor) else features.pooler_output


class _TensorCLIP(nn.Module):
    """A CLIPModel whose ``get_*_features`` return tensors, as torchmetrics 1.9's clip_score expects
    (it breaks on transformers 5's ModelOutput: Lightning-AI/torchmetrics#3407)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _as_tensor(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return _as_tensor(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


class LocalCLIP:
    """A CLIPModel + CLIPProcessor loaded from a local folder (never the hub)."""

    def __init__(self, folder: str | Path, device: str | torch.device | None = None, batch_size: int = 32):
        from transformers import CLIPModel, CLIPProcessor

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise UserError(f"CLIP folder not found: {folder}")
        if not (folder / "config.json").is_file():
            raise UserError(f"not a CLIP model folder (no config.json): {folder}")
        with _hub_offline():
            try:
                model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
                processor = CLIPProcessor.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise UserError(f"cannot load a CLIP model and processor from {folder}: {first_line(exc)}") from None
        self.folder = folder.resolve()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = _TensorCLIP(model).to(self.device).eval()
        self.processor = processor
        self.batch_size = batch_size

    def describe(self) -> dict:
        config = self.model.config
        return {
            "folder": str(self.folder),
            "model_type": config.model_type,
            "projection_dim": int(config.projection_dim),
            "image_size": int(config.vision_config.image_size),
        }

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def _loader(self):
        return self.model, self.processor

    @torch.no_grad()
    def clip_scores(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """Per image: torchmetrics' CLIP score max(100 cos(image, prompt), 0), from this folder's CLIP."""
        from torchmetrics.functional.multimodal import clip_score

        scores = [
            float(clip_score(_chw(img, self.device), prompt, model_name_or_path=self._loader))
            for img, prompt in zip(images, prompts, strict=True)
        ]
        return np.array(scores, dtype=np.float64)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings (N, D) of uint8 images (N, 3, H, W), through the CLIP processor."""
        pixels = self.processor(images=[img.cpu() for img in images], return_tensors="pt")["pixel_values"]
        return self.model.get_image_features(pixels.to(self.device))

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.processor(text=texts, return_tensors="pt", padding=True, truncation=True)
        return self.model.get_text_features(
            tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        )

    def embed_images(self, images: np.ndarray) -> torch.Tensor:
        """Image embeddings of uint8 (N, H, W, 3) images, in batches."""
        chunks = [
            self.image_features(
                torch.from_numpy(np.ascontiguousarray(images[s : s + self.batch_size])).permute(0, 3, 1, 2)
            )
            for s in range(0, len(images), self.batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.dim, device=self.device)


def _chw(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(device)


def check_template(template: str) -> None:
    try:
        filled = template.format(concept="x")
    except (KeyError, IndexError, ValueError):
        raise UserError(f"bad zero-shot template {template!r}: use {{concept}} and no other field") from None
    if "{concept}" not in template or filled == template:
        raise UserError(f"bad zero-shot template {template!r}: it must contain {{concept}}")


def zero_shot_classes(rows: list[PromptRow]) -> list[str]:
    """The prompt set's concept names (sorted, empty ones left out): the zero-shot classes."""
    return sorted({r.concept for r in rows if r.concept})


def zero_shot(
    clip: LocalCLIP, image_features: torch.Tensor, classes: list[str], template: str
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class index per image, cosine similarity (N, C)): argmax over ``template`` texts."""
    text = clip.text_features([template.format(concept=c) for c in classes])
    image = image_features / image_features.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    sims = (image @ text.T).double().cpu().numpy()
    return sims.argmax(axis=1), sims


class ClipJudge:
    """CLIP zero-shot among ``classes``; an attack image counts when its own concept wins."""

    def __init__(self, clip: LocalCLIP, classes: list[str], template: str) -> None:
        check_template(template)
        if len(classes) < 2:
            raise UserError("a CLIP judge needs at least two concept names in the prompt set (targets and others)")
        self.clip, self.classes, self.template = clip, list(classes), template

    def __call__(self, rows: list[PromptRow], images: np.ndarray) -> np.ndarray:
        predicted, _ = zero_shot(self.clip, self.clip.embed_images(images), self.classes, self.template)
        return (np.array(self.classes)[predicted] == np.array([r.concept for r in rows])).astype(float)

    def describe(self) -> dict:
        return {"judge": "CLIP zero-shot", **self.clip.describe(), "classes": self.classes, "template": self.template}
