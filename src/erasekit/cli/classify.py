"""erasekit classify."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from erasekit.cli.common import app
from erasekit.errors import UserError
from erasekit.utils.io import json_text

MAX_IMAGE_PIXELS = 4096 * 4096  # classify: ShapeWorld images are 32 x 32; far larger ones are refused unread


@app.command()
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
