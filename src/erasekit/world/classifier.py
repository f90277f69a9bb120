"""The measuring instrument (specs/shapeworld.md, "Classifier"): a small CNN with one head per factor.

Trained on rendered images with augmentation that covers what generated images look like (noise,
blur, colour shift). Its penultimate features are the embedding for SW-FID / SW-KID.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from erasekit.utils.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from erasekit.utils.io import atomic_dir, json_text
from erasekit.utils.validation import AT_LEAST_ONE, POSITIVE, SEED, check_numbers
from erasekit.world.factors import FACTOR_NAMES, VOCAB
from erasekit.world.render import render

FEATURE_DIM = 256


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class FactorClassifier(nn.Module):
    """uint8 or [0,1] images (B, 32, 32, 3) -> logits per factor; ``features`` for SW-FID."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _block(3, 24),
            _block(24, 48),
            _block(48, 96),
            nn.Flatten(),
            nn.Linear(96 * 4 * 4, FEATURE_DIM),
            nn.ReLU(inplace=True),
        )
        self.heads = nn.ModuleDict({f: nn.Linear(FEATURE_DIM, len(VOCAB.values(f))) for f in FACTOR_NAMES})

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        return (images.permute(0, 3, 1, 2) - 0.5) / 0.25

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(images))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.features(images)
        return {f: head(feats) for f, head in self.heads.items()}

    @torch.inference_mode()
    def predict(self, images: np.ndarray | torch.Tensor, batch_size: int = 512) -> dict[str, np.ndarray]:
        """Class probabilities per factor, as numpy arrays (B, n_values)."""
        self.eval()
        images = torch.as_tensor(images)
        out: dict[str, list[torch.Tensor]] = {f: [] for f in FACTOR_NAMES}
        for start in range(0, len(images), batch_size):
            for f, logits in self(images[start : start + batch_size]).items():
                out[f].append(logits.softmax(-1))
        return {f: torch.cat(v).numpy() for f, v in out.items()}

    @torch.inference_mode()
    def embed(self, images: np.ndarray | torch.Tensor, batch_size: int = 512) -> np.ndarray:
        self.eval()
        images = torch.as_tensor(images)
        return torch.cat([self.features(images[s : s + batch_size]) for s in range(0, len(images), batch_size)]).numpy()


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Noise, blur and colour shift of the kind a denoiser's samples show; float [0,1] (B, 32, 32, 3)."""
    x = images.float() / 255.0
    b = x.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    x = x * (0.9 + 0.2 * rand(b, 1, 1, 1)) + 0.05 * (rand(b, 1, 1, 3) - 0.5) * 2
    blur = rand(b) < 0.3
    if blur.any():
        kernel = torch.tensor([0.25, 0.5, 0.25])
        k2 = (kernel[:, None] * kernel[None]).expand(3, 1, 3, 3)
        xb = x[blur].permute(0, 3, 1, 2)
        xb = F.conv2d(F.pad(xb, (1, 1, 1, 1), mode="replicate"), k2, groups=3)
        x[blur] = xb.permute(0, 2, 3, 1)
    sigma = 0.06 * rand(b, 1, 1, 1)
    x = x + sigma * torch.randn(x.shape, generator=gen)
    return x.clamp(0, 1)


@dataclass
class ClassifierTrainConfig:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    checkpoint_every: int = 500
    seed: int = 0

    RANGES: ClassVar = {
        **dict.fromkeys(("steps", "batch_size", "checkpoint_every"), AT_LEAST_ONE),
        "lr": POSITIVE,
        "seed": SEED,
    }

    def __post_init__(self) -> None:
        check_numbers(self, "classifier training")


def train_classifier(out: Path, config: ClassifierTrainConfig, export: Path | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model = FactorClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    start, elapsed = 0, 0.0
    resume = latest_checkpoint(out)
    if resume is not None:
        state = load_checkpoint(resume, {"classifier": model}, optimizer)
        start, elapsed = state["step"], state["wall_seconds"]
    t0 = time.time()
    model.train()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="classifier", unit="step")
    for step in bar:
        rng = np.random.default_rng([config.seed, step])
        gen = torch.Generator().manual_seed(config.seed * 7919 + step)
        images, batch = render(rng, config.batch_size)
        logits = model(augment(torch.from_numpy(images), gen))
        loss = sum(F.cross_entropy(logits[f], torch.from_numpy(getattr(batch, f))) for f in FACTOR_NAMES)
        lr = 0.5 * config.lr * (1 + np.cos(np.pi * step / config.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            save_checkpoint(
                out,
                step + 1,
                {"classifier": model},
                optimizer,
                {"wall_seconds": elapsed + time.time() - t0, "config": asdict(config)},
            )
    accuracy = heldout_accuracy(model, seed=10_000 + config.seed)
    card = {
        "config": asdict(config),
        "wall_seconds": round(elapsed + time.time() - t0, 1),
        "heldout_accuracy": accuracy,
        "heldout_images": 10_000,
    }
    if export is not None:
        save_classifier(model, export, card)
    return card


def heldout_accuracy(model: FactorClassifier, seed: int, n: int = 10_000) -> dict[str, float]:
    """Per-head accuracy on fresh rendered images never seen in training (different seed stream)."""
    images, batch = render(np.random.default_rng(seed), n)
    probs = model.predict(images)
    return {f: float((probs[f].argmax(1) == getattr(batch, f)).mean()) for f in FACTOR_NAMES}


def save_classifier(model: FactorClassifier, target: Path, card: dict) -> None:
    with atomic_dir(target, overwrite=True) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "classifier.safetensors")
        (tmp / "training.json").write_text(json_text(card))


def load_classifier(folder: Path) -> FactorClassifier:
    model = FactorClassifier()
    model.load_state_dict(load_file(Path(folder) / "classifier.safetensors"))
    return model.eval()
