"""Train the ShapeWorld denoiser: DDPM epsilon objective with caption dropout (for CFG), EMA,
checkpoints every few hundred steps and automatic resume from the latest one."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from erasekit.utils.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from erasekit.utils.io import atomic_dir, json_text
from erasekit.utils.validation import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, SEED, SHARE, Range, check_numbers
from erasekit.world.data import FACTORS, CaptionPool, build_pool
from erasekit.world.denoiser import (
    SCHEDULER_CONFIG,
    UNET_CONFIG,
    build_unet,
    images_to_latents,
    train_scheduler,
    training_target,
)
from erasekit.world.factors import VOCAB
from erasekit.world.text_encoder import shared_encoder


@dataclass
class DenoiserTrainConfig:
    steps: int = 8000
    batch_size: int = 64
    lr: float = 6e-4
    lr_final: float | None = None  # None: constant lr; else cosine decay to it over the current segment
    warmup_steps: int = 300
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    pool_random_captions: int = 12000
    pool_canonical: bool = True  # include the short prompt of every shape-colour-pattern triple
    unet_config: dict | None = None  # None: the shipped architecture (world/denoiser.py)
    # Oversample captions that name these patterns (relative weight; others 1), e.g. the ones the model
    # still draws badly. None: every caption equally likely.
    pattern_weights: dict[str, float] | None = None
    checkpoint_every: int = 100
    seed: int = 0

    RANGES: ClassVar = {
        **dict.fromkeys(("steps", "batch_size", "pool_random_captions", "checkpoint_every"), AT_LEAST_ONE),
        "lr": POSITIVE,
        "lr_final": NON_NEGATIVE,
        "warmup_steps": NON_NEGATIVE,
        "ema_decay": Range(0, 1, high_open=True),
        "caption_dropout": SHARE,
        "seed": SEED,
    }

    def __post_init__(self) -> None:
        check_numbers(self, "denoiser training")


def _pool_cache(out: Path, config: DenoiserTrainConfig) -> CaptionPool:
    """Build the caption pool once per training directory; later resumes load it."""
    tensors_path, meta_path = out / "pool.safetensors", out / "pool.json"
    if tensors_path.exists() and meta_path.exists():
        t = load_file(tensors_path)
        meta = json.loads(meta_path.read_text())
        return CaptionPool(
            meta["texts"],
            t["factor_ids"].numpy(),
            t["size_ids"].numpy(),
            t["position_ids"].numpy(),
            t["embeddings"],
            t["masks"].bool(),
        )
    pool = build_pool(shared_encoder(), config.pool_random_captions, config.seed, config.pool_canonical)
    save_file(
        {
            "factor_ids": torch.from_numpy(pool.factor_ids),
            "size_ids": torch.from_numpy(pool.size_ids),
            "position_ids": torch.from_numpy(pool.position_ids),
            "embeddings": pool.embeddings,
            "masks": pool.masks.to(torch.uint8),
        },
        tensors_path,
    )
    meta_path.write_text(json.dumps({"texts": pool.texts}))
    return pool


def caption_probabilities(pool: CaptionPool, pattern_weights: dict[str, float] | None) -> np.ndarray | None:
    """Sampling probability of every caption in the pool; None when uniform."""
    if not pattern_weights:
        return None
    weights = np.ones(len(pool.texts))
    pattern_ids = pool.factor_ids[:, FACTORS.index("pattern")]
    for name, weight in pattern_weights.items():
        weights[pattern_ids == VOCAB.index("pattern", name)] = weight
    return weights / weights.sum()


def learning_rate(step: int, segment_start: int, config: DenoiserTrainConfig) -> float:
    """Linear warm-up from the start of the segment (a fresh run or a continuation with a fresh optimizer),
    then constant, or cosine-decayed to ``lr_final`` at ``config.steps``."""
    warm = min(1.0, (step + 1 - segment_start) / config.warmup_steps)
    if config.lr_final is None:
        return config.lr * warm
    progress = (step - segment_start) / max(1, config.steps - segment_start)
    cosine = config.lr_final + 0.5 * (config.lr - config.lr_final) * (1 + np.cos(np.pi * min(1.0, progress)))
    return float(cosine * warm)


def export_unet(unet: torch.nn.Module, target: Path, card: dict) -> None:
    """Ship weights in float16 (half the size; loaders upcast to float32)."""
    with atomic_dir(target, overwrite=True) as tmp:
        copy.deepcopy(unet).half().save_pretrained(tmp, safe_serialization=True)
        (tmp / "training.json").write_text(json_text(card))


def _head_change(init_from: Path, architecture: dict) -> str:
    """'attention heads A -> B' when the exported denoiser at ``init_from`` splits attention otherwise
    (``architecture`` JSON-safe, as config.json holds it)."""
    before = json.loads((init_from / "config.json").read_text())["attention_head_dim"]
    after = architecture["attention_head_dim"]
    return "" if before == after else f"attention heads {before} -> {after}"


@dataclass
class TrainingProgress:
    """Where a run stands: its step, wall time, running loss, objective history and the step its optimizer (and
    lr schedule) last started afresh."""

    start: int = 0
    elapsed: float = 0.0
    running: float | None = None
    history: list[dict] = field(default_factory=list)
    segment_start: int = 0


@dataclass
class Trainee:
    """The model being trained, its EMA copy, its optimizer and the noise schedule."""

    unet: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    architecture: dict


def _architecture(resume: Path | None, config: DenoiserTrainConfig) -> dict:
    """A checkpoint builds the architecture it was saved with, whatever UNET_CONFIG has become since."""
    recorded = json.loads((resume / "state.json").read_text()).get("architecture") if resume else None
    return json.loads(json.dumps(recorded or config.unet_config or UNET_CONFIG))  # JSON-safe (lists)


def _trainee(architecture: dict, config: DenoiserTrainConfig) -> Trainee:
    unet = build_unet(architecture)
    ema = copy.deepcopy(unet).requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.01)
    return Trainee(unet, ema, optimizer, train_scheduler(), architecture)


def _resumed(resume: Path, trainee: Trainee, objective: str) -> TrainingProgress:
    state = load_checkpoint(resume, {"unet": trainee.unet, "ema": trainee.ema}, trainee.optimizer)
    history = state.get("history", [{"from_step": 0, "prediction_type": "epsilon"}])
    progress = TrainingProgress(
        state["step"], state["wall_seconds"], state.get("loss"), history, state.get("segment_start", 0)
    )
    if history[-1]["prediction_type"] != objective:  # a run continued under a new objective says so
        history.append({"from_step": progress.start, "prediction_type": objective})
    tqdm.write(f"resuming from {resume.name}")
    return progress


def _continued(init_from: Path, trainee: Trainee, objective: str) -> TrainingProgress:
    """Weights (model and EMA) from an exported denoiser; its steps and wall time carry over, a fresh optimizer."""
    card = json.loads((Path(init_from) / "training.json").read_text())
    weights = load_file(Path(init_from) / "diffusion_pytorch_model.safetensors")
    for module in (trainee.unet, trainee.ema):
        module.load_state_dict({k: v.float() for k, v in weights.items()})
    start = card["steps"]
    note = f"continued from {init_from}, fresh optimizer"
    heads = _head_change(Path(init_from), trainee.architecture)
    if heads:  # the weights fit, but attention computes another function until re-learned
        note += f"; {heads}"
        tqdm.write(f"warm start: {heads}")
    history = [*card["objective_history"], {"from_step": start, "prediction_type": objective, "note": note}]
    tqdm.write(f"continuing from {init_from} at step {start}")
    return TrainingProgress(start, card["wall_seconds"], card["final_loss"], history, start)


def _step_loss(step: int, config: DenoiserTrainConfig, pool: CaptionPool, probabilities, empty, trainee: Trainee):
    """The training loss of one step. Data and noise are a function of (seed, step), so a resumed run continues
    the same stream."""
    rng = np.random.default_rng([config.seed, step])
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    idx = (
        rng.integers(0, len(pool.texts), config.batch_size)
        if probabilities is None
        else rng.choice(len(pool.texts), config.batch_size, p=probabilities)
    )
    latents = images_to_latents(torch.from_numpy(pool.render_batch(rng, idx)))
    states, mask = pool.embeddings[idx].float(), pool.masks[idx]
    drop = torch.from_numpy(rng.random(config.batch_size) < config.caption_dropout)
    states = torch.where(drop[:, None, None], empty[0], states)
    mask = torch.where(drop[:, None], empty[1], mask)
    noise = torch.randn(latents.shape, generator=gen)
    t = torch.randint(0, trainee.scheduler.config.num_train_timesteps, (config.batch_size,), generator=gen)
    a = trainee.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    pred = trainee.unet(noisy, t, encoder_hidden_states=states, encoder_attention_mask=mask).sample
    return torch.nn.functional.mse_loss(pred, training_target(latents, noise, a))


def _update(trainee: Trainee, loss: torch.Tensor, lr: float, step: int, config: DenoiserTrainConfig) -> None:
    """One AdamW step at ``lr`` (gradients clipped to norm 1), then the EMA."""
    for group in trainee.optimizer.param_groups:
        group["lr"] = lr
    trainee.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainee.unet.parameters(), 1.0)
    trainee.optimizer.step()
    decay = min(config.ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, p in zip(trainee.ema.parameters(), trainee.unet.parameters(), strict=True):
            pe.lerp_(p, 1 - decay)


def _save(out: Path, step: int, trainee: Trainee, config: DenoiserTrainConfig, progress: TrainingProgress, wall):
    save_checkpoint(
        out,
        step,
        {"unet": trainee.unet, "ema": trainee.ema},
        trainee.optimizer,
        {
            "wall_seconds": wall,
            "config": asdict(config),
            "loss": progress.running,
            "history": progress.history,
            "segment_start": progress.segment_start,
            "architecture": trainee.architecture,
        },
    )


def train_denoiser(
    out: Path, config: DenoiserTrainConfig, export: Path | None = None, init_from: Path | None = None
) -> dict:
    """Train (or resume from the latest checkpoint in ``out``).

    ``init_from``: an exported denoiser folder (e.g. the shipped one) to continue from when ``out`` has
    no checkpoint yet; its step count and wall time carry over, the optimizer state starts afresh.
    """
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    pool = _pool_cache(out, config)
    empty = shared_encoder()([""])
    resume = latest_checkpoint(out)
    trainee = _trainee(_architecture(resume, config), config)
    objective = SCHEDULER_CONFIG["prediction_type"]
    progress = TrainingProgress(history=[{"from_step": 0, "prediction_type": objective}])
    if resume is not None:
        progress = _resumed(resume, trainee, objective)
    elif init_from is not None:
        progress = _continued(init_from, trainee, objective)
    probabilities = caption_probabilities(pool, config.pattern_weights)
    log = (out / "loss.jsonl").open("a")
    start = progress.start
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="denoiser", unit="step")
    t0 = time.time()
    for step in bar:
        loss = _step_loss(step, config, pool, probabilities, empty, trainee)
        lr = learning_rate(step, progress.segment_start, config)
        _update(trainee, loss, lr, step, config)
        progress.running = loss.item() if progress.running is None else 0.98 * progress.running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{progress.running:.4f}")
        if (step + 1) % 50 == 0:
            log.write(json_text({"step": step + 1, "loss": progress.running, "lr": lr}, indent=None) + "\n")
            log.flush()
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            _save(out, step + 1, trainee, config, progress, progress.elapsed + time.time() - t0)
    card = {
        "config": asdict(config),
        "steps": max(start, config.steps),
        "wall_seconds": round(progress.elapsed + time.time() - t0, 1),
        "final_loss": progress.running,
        "parameters": sum(p.numel() for p in trainee.ema.parameters()),
        "caption_pool": len(pool.texts),
        "objective_history": progress.history,
    }
    if export is not None:
        export_unet(trainee.ema, export, card)
    return card
