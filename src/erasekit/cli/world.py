"""erasekit world: train and inspect the embedded ShapeWorld."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from erasekit.cli.common import SEED_MAX, console, summary_table, world_app
from erasekit.errors import UserError


def _pattern_weights(items: list[str]) -> dict[str, float] | None:
    """Parse repeated ``PATTERN=W`` options; a bad one is a UserError."""
    from erasekit.utils.options import parse_assignments
    from erasekit.world.factors import VOCAB

    weights: dict[str, float] = {}
    for name, value in parse_assignments(items, "--pattern-weight").items():
        item = f"{name}={value}"
        if name not in VOCAB.pattern:
            known = ", ".join(VOCAB.pattern)
            raise UserError(f"--pattern-weight {item!r}: expected PATTERN=W with PATTERN one of {known}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise UserError(f"--pattern-weight {item!r}: {value!r} is not a number") from None
        if not 0 < weights[name] < float("inf"):
            raise UserError(f"--pattern-weight {item!r}: the weight must be a positive finite number")
    return weights or None


@world_app.command("train-denoiser")
def train_denoiser_cmd(
    out: Annotated[Path, typer.Option(help="checkpoint folder; an existing one is resumed")] = Path("runs/denoiser"),
    steps: Annotated[int, typer.Option(min=1)] = 8000,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option(min=0.0)] = 6e-4,
    lr_final: Annotated[
        float | None, typer.Option(min=0.0, help="cosine-decay the lr to this by the last step (default: constant)")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
    ship: Annotated[bool, typer.Option(help="export the EMA weights into the package's assets")] = False,
    continue_shipped: Annotated[
        bool, typer.Option(help="start from the shipped weights (when --out has no checkpoint yet)")
    ] = False,
    pattern_weight: Annotated[
        list[str] | None,
        typer.Option(help="PATTERN=W: draw captions naming PATTERN W times as often (repeatable)"),
    ] = None,
) -> None:
    """Train the ShapeWorld denoiser (checkpoints every 100 steps; resumes automatically)."""
    from erasekit.world.assets import denoiser_dir
    from erasekit.world.train_denoiser import DenoiserTrainConfig, train_denoiser

    config = DenoiserTrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        lr_final=lr_final,
        seed=seed,
        pattern_weights=_pattern_weights(pattern_weight or []),
    )
    init = denoiser_dir() if continue_shipped else None
    if init is not None and not (init / "training.json").exists():
        raise UserError("no shipped denoiser to continue from")
    card = train_denoiser(out, config, export=denoiser_dir() if ship else out / "export", init_from=init)
    console.print(summary_table("denoiser", [(k, str(v)) for k, v in card.items() if k != "config"]))


@world_app.command("train-classifier")
def train_classifier_cmd(
    out: Annotated[Path, typer.Option(help="checkpoint folder; an existing one is resumed")] = Path("runs/classifier"),
    steps: Annotated[int, typer.Option(min=1)] = 2000,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX)] = 0,
    ship: Annotated[bool, typer.Option(help="export the weights into the package's assets")] = False,
) -> None:
    """Train the factor classifier; reports held-out accuracy per head."""
    from erasekit.world.assets import classifier_dir
    from erasekit.world.classifier import ClassifierTrainConfig, train_classifier

    card = train_classifier(
        out, ClassifierTrainConfig(steps=steps, seed=seed), export=classifier_dir() if ship else out / "export"
    )
    acc = card["heldout_accuracy"]
    console.print(summary_table("classifier held-out accuracy", [(f, f"{v:.4f}") for f, v in acc.items()]))


@world_app.command("info")
def info() -> None:
    """Vocabulary sizes, shipped assets and their measured quality."""
    from erasekit.world.assets import ASSETS
    from erasekit.world.factors import FACTOR_NAMES, VOCAB

    rows = [(f"{f} values", str(len(VOCAB.values(f)))) for f in FACTOR_NAMES]
    rows.append(("triple concepts", str(len(VOCAB.shape) * len(VOCAB.colour) * len(VOCAB.pattern))))
    card = ASSETS / "model_card.json"
    if card.exists():
        rows += [(k, str(v)) for k, v in json.loads(card.read_text())["summary"].items()]
    console.print(summary_table("ShapeWorld", rows))
