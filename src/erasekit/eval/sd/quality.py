"""FID / KID of generated images against a reference image folder (torchmetrics), on Inception pool features from
the torch-fidelity weights file the user has, else on CLIP image embeddings (clean-fid's ``clip`` mode)."""

from __future__ import annotations

import hashlib
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from erasekit.errors import UserError, first_line
from erasekit.eval.sd.clip import LocalCLIP

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000


class _Precomputed(nn.Module):
    """The torchmetrics ``feature`` module for features computed once (shared by FID and KID)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


class FeatureExtractor(Protocol):
    info: dict

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N, D) of uint8 images (N, 3, H, W)."""
        ...


class ClipImageFeatures:
    """CLIP image embeddings as FID/KID features (clean-fid's ``clip`` mode, with the user's CLIP)."""

    def __init__(self, clip: LocalCLIP):
        self.clip = clip
        self.info = {"features": "clip", "clip": str(clip.folder), "feature_dim": clip.dim}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.image_features(images).double()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class InceptionFeatures:
    """Inception-v3 pool features (2048) from the torch-fidelity weights file the user has."""

    def __init__(self, weights: str | Path, device: torch.device):
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

        weights = Path(weights).expanduser()
        if not weights.is_file():
            raise UserError(f"Inception weights file not found: {weights}")
        if not _TORCH_FIDELITY_AVAILABLE:
            raise UserError("--inception-weights needs torch-fidelity ('inception' extra): pip install torch-fidelity")
        from torchmetrics.image.fid import NoTrainInceptionV3

        try:  # a plain tensor dict or nothing: torch-fidelity then loads the same file
            torch.load(weights, map_location="cpu", weights_only=True)
            net = NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
        except (RuntimeError, OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as exc:
            raise UserError(f"cannot load Inception weights from {weights}: {first_line(exc)}") from None
        self.net = net.to(device)
        self.device = device
        self.info = {
            "features": "inception-v3 pool3 (torch-fidelity)",
            "weights": str(weights.resolve()),
            "weights_sha256": _sha256(weights),
            "feature_dim": 2048,
        }

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.to(self.device)).double()


def reference_paths(folder: str | Path) -> list[Path]:
    """The image files under a reference folder (recursively, sorted); none is a UserError."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"reference folder not found: {folder}")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise UserError(f"reference folder has no images ({', '.join(IMAGE_SUFFIXES)}): {folder}")
    return paths


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError):
        raise UserError(f"not a readable image: {path}") from None


def _same_shape_runs(images: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Consecutive images of one size stacked (N, H, W, 3): a reference folder may mix sizes."""
    start = 0
    for i in range(1, len(images) + 1):
        if i == len(images) or images[i].shape != images[start].shape:
            yield np.stack(images[start:i])
            start = i


def extract_features(extractor: FeatureExtractor, batches: Iterator[np.ndarray]) -> torch.Tensor:
    chunks = [extractor(torch.from_numpy(np.ascontiguousarray(b)).permute(0, 3, 1, 2)).cpu() for b in batches]
    return torch.cat(chunks) if chunks else torch.zeros(0, 0, dtype=torch.float64)


def path_batches(paths: list[Path], batch_size: int) -> Iterator[np.ndarray]:
    for s in range(0, len(paths), batch_size):
        yield from _same_shape_runs([_read_image(p) for p in paths[s : s + batch_size]])


def array_batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for s in range(0, len(images), batch_size):
        yield images[s : s + batch_size]


def fid_kid(fake: torch.Tensor, real: torch.Tensor, seed: int, subsets: int = KID_SUBSETS) -> dict:
    """FID and KID (torchmetrics) between feature sets (N, D); None when either side has < 2 rows."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    subset_size = min(KID_SUBSET_SIZE, len(fake), len(real))
    out = {"fid": None, "kid": None, "kid_std": None, "kid_subsets": subsets, "kid_subset_size": subset_size}
    if len(fake) < 2 or len(real) < 2:
        return out | {"note": "FID/KID need at least 2 generated and 2 reference images"}
    fake, real = fake.double().cpu(), real.double().cpu()
    fid = FrechetInceptionDistance(feature=_Precomputed(fake.shape[1]))
    with warnings.catch_warnings():  # "KID will save all extracted features in buffer": they are in memory already
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=_Precomputed(fake.shape[1]), subsets=subsets, subset_size=subset_size)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global generator
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return out | {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
