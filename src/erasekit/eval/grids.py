"""Image grids (PNG) for reports and the CLI."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, columns: int = 8, scale: int = 3, pad: int = 2) -> Image.Image:
    """Tile uint8 images (N, H, W, 3) into one picture, upscaled with nearest neighbour."""
    if len(images) == 0:
        raise ValueError("no images to tile")
    n, h, w, _ = images.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = img
    grid = Image.fromarray(canvas)
    return grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)


def png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
