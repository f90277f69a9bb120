"""ShapeWorld's own commands: ``erasekit world train-denoiser | train-classifier | info`` and ``erasekit classify``.
The CLI asks the embedded world for them (``World.register_commands``); it names no world."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from erasekit.cli.common import SEED_MAX, console, summary_table
from erasekit.errors import UserError
from erasekit.utils.io import json_text

world_app = typer.Typer(no_args_is_help=True, help="The embedded ShapeWorld: train, inspect.")
MAX_IMAGE_PIXELS = 4096 * 4096  # classify: ShapeWorld images are 32 x 32; far larger ones are refused unread


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


def classify(images: Annotated[list[Path], typer.Argument(help="image files")]) -> None:
    """Read shape, colour, pattern and background off images; JSON on stdout."""
    from PIL import Image, UnidentifiedImageError

    from erasekit.world.factors import FACTOR_NAMES, VOCAB
    from erasekit.world.shapeworld import shipped_classifier

    arrays = []
    for path in images:
        if not path.is_file():
            raise UserError(f"image not found: {path}" + (" (a folder)" if path.is_dir() else ""))
        try:
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:  # read from the header, before any decoding
                    raise UserError(f"{path}: {img.width}x{img.height} pixels is too large to classify")
                arrays.append(np.asarray(img.convert("RGB").resize((32, 32), Image.BILINEAR)))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
            raise UserError(f"not an image: {path}") from None
    probs = shipped_classifier().predict(np.stack(arrays))
    result = []
    for i, path in enumerate(images):
        entry = {"image": str(path)}
        for f in FACTOR_NAMES:
            k = int(probs[f][i].argmax())
            entry[f] = VOCAB.values(f)[k]
            entry[f"{f}_probability"] = round(float(probs[f][i][k]), 4)
        result.append(entry)
    sys.stdout.write(json_text(result))


def register_commands(app: typer.Typer) -> None:
    """Add the world's commands to the ``erasekit`` app."""
    app.command()(classify)
    app.add_typer(world_app, name="world")
