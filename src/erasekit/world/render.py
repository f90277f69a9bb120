"""Procedural renderer of ShapeWorld images (specs/shapeworld.md, "Images").

Vectorised over a batch: each shape is drawn once as a high-resolution template and box-blurred
into a soft coverage map (the blur is the anti-aliasing); an image is made by mapping its pixel grid
through the inverse of the object's similarity transform into the template, filling with the
pattern and alpha-compositing over the background. Pure numpy/PIL, deterministic given a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from erasekit.world.factors import COLOURS, FACTOR_NAMES, POSITIONS, SIZES, VOCAB

IMAGE_SIZE = 32
TEMPLATE_SIZE = 128
# Object half-extent in pixels per named size.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (7.5, 8.5), "medium": (9.5, 11.0), "large": (12.0, 13.5)}
MAX_ROTATION_DEG = 12.0


def _poly(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Map points from the unit box [-1, 1]^2 (y down) to template pixel coordinates."""
    s = (TEMPLATE_SIZE - 1) / 2
    return [(s * (x + 1), s * (y + 1)) for x, y in points]


def _regular(n: int, r: float = 1.0, phase: float = -np.pi / 2) -> list[tuple[float, float]]:
    return [(r * np.cos(phase + 2 * np.pi * k / n), r * np.sin(phase + 2 * np.pi * k / n)) for k in range(n)]


def _ellipse_box(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    (x0, y0), (x1, y1) = _poly([(cx - rx, cy - ry), (cx + rx, cy + ry)])
    return [x0, y0, x1, y1]


def _draw_shape(name: str, draw: ImageDraw.ImageDraw) -> None:
    fill, hole = 255, 0
    if name == "circle":
        draw.ellipse(_ellipse_box(0, 0, 0.95, 0.95), fill=fill)
    elif name == "square":
        draw.polygon(_poly([(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]), fill=fill)
    elif name == "triangle":
        draw.polygon(_poly([(0, -0.95), (0.97, 0.8), (-0.97, 0.8)]), fill=fill)
    elif name == "star":
        pts = [p for k in range(5) for p in (_regular(5)[k], _regular(5, 0.42, -np.pi / 2 + np.pi / 5)[k])]
        draw.polygon(_poly(pts), fill=fill)
    elif name == "heart":
        draw.ellipse(_ellipse_box(-0.45, -0.4, 0.5, 0.5), fill=fill)
        draw.ellipse(_ellipse_box(0.45, -0.4, 0.5, 0.5), fill=fill)
        draw.polygon(_poly([(-0.93, -0.25), (0.93, -0.25), (0, 0.95)]), fill=fill)
    elif name == "cross":
        w = 0.32
        draw.polygon(_poly([(-w, -0.95), (w, -0.95), (w, 0.95), (-w, 0.95)]), fill=fill)
        draw.polygon(_poly([(-0.95, -w), (0.95, -w), (0.95, w), (-0.95, w)]), fill=fill)
    elif name == "diamond":
        draw.polygon(_poly([(0, -0.97), (0.68, 0), (0, 0.97), (-0.68, 0)]), fill=fill)
    elif name == "parallelogram":
        draw.polygon(_poly([(-0.45, -0.6), (0.97, -0.6), (0.45, 0.6), (-0.97, 0.6)]), fill=fill)
    elif name == "crescent":
        draw.ellipse(_ellipse_box(0, 0, 0.92, 0.92), fill=fill)
        draw.ellipse(_ellipse_box(0.42, -0.12, 0.75, 0.75), fill=hole)
    elif name == "ring":
        draw.ellipse(_ellipse_box(0, 0, 0.95, 0.95), fill=fill)
        draw.ellipse(_ellipse_box(0, 0, 0.42, 0.42), fill=hole)
    elif name == "arrow":
        draw.polygon(
            _poly([(-0.95, -0.28), (0.15, -0.28), (0.15, -0.75), (0.97, 0), (0.15, 0.75), (0.15, 0.28), (-0.95, 0.28)]),
            fill=fill,
        )
    elif name == "ellipse":
        draw.ellipse(_ellipse_box(0, 0, 0.97, 0.55), fill=fill)
    elif name == "trapezoid":
        draw.polygon(_poly([(-0.45, -0.65), (0.45, -0.65), (0.97, 0.65), (-0.97, 0.65)]), fill=fill)
    elif name == "lightning":
        draw.polygon(
            _poly(
                [(0.15, -0.97), (0.6, -0.97), (0.2, -0.12), (0.62, -0.12), (-0.3, 0.97), (-0.05, 0.12), (-0.5, 0.12)]
            ),
            fill=fill,
        )
    elif name == "house":
        draw.polygon(
            _poly([(0, -0.97), (0.95, -0.15), (0.7, -0.15), (0.7, 0.9), (-0.7, 0.9), (-0.7, -0.15), (-0.95, -0.15)]),
            fill=fill,
        )
        draw.polygon(_poly([(-0.15, 0.35), (0.15, 0.35), (0.15, 0.9), (-0.15, 0.9)]), fill=hole)
    elif name == "droplet":
        draw.ellipse(_ellipse_box(0, 0.3, 0.65, 0.65), fill=fill)
        draw.polygon(_poly([(0, -0.97), (0.6, 0.05), (-0.6, 0.05)]), fill=fill)
    elif name == "hourglass":
        draw.polygon(
            _poly([(-0.85, -0.95), (0.85, -0.95), (0.12, 0), (0.85, 0.95), (-0.85, 0.95), (-0.12, 0)]), fill=fill
        )
    elif name == "semicircle":
        (x0, y0, x1, y1) = _ellipse_box(0, 0.45, 0.97, 0.97)
        draw.pieslice([x0, y0, x1, y1], start=180, end=360, fill=fill)
    elif name == "tshape":
        draw.polygon(_poly([(-0.9, -0.9), (0.9, -0.9), (0.9, -0.45), (-0.9, -0.45)]), fill=fill)
        draw.polygon(_poly([(-0.25, -0.9), (0.25, -0.9), (0.25, 0.95), (-0.25, 0.95)]), fill=fill)
    elif name == "skull":
        draw.ellipse(_ellipse_box(0, -0.2, 0.85, 0.75), fill=fill)
        draw.polygon(_poly([(-0.5, 0.3), (0.5, 0.3), (0.45, 0.95), (-0.45, 0.95)]), fill=fill)
        draw.ellipse(_ellipse_box(-0.35, -0.1, 0.24, 0.26), fill=hole)
        draw.ellipse(_ellipse_box(0.35, -0.1, 0.24, 0.26), fill=hole)
        draw.polygon(_poly([(0, 0.2), (0.12, 0.42), (-0.12, 0.42)]), fill=hole)
        for x in (-0.25, 0.0, 0.25):
            draw.polygon(_poly([(x - 0.04, 0.68), (x + 0.04, 0.68), (x + 0.04, 0.95), (x - 0.04, 0.95)]), fill=hole)
    else:  # pragma: no cover - guarded by the vocabulary
        raise ValueError(f"unknown shape {name!r}")


@cache
def shape_templates() -> np.ndarray:
    """(n_shapes, T, T) soft coverage in [0, 1] of every shape in the unit box."""
    masks = []
    for name in VOCAB.shape:
        img = Image.new("L", (TEMPLATE_SIZE, TEMPLATE_SIZE), 0)
        _draw_shape(name, ImageDraw.Draw(img))
        # About one output pixel of blur at medium size: coverage instead of a hard edge.
        img = img.filter(ImageFilter.BoxBlur(3))
        masks.append(np.asarray(img, dtype=np.float32) / 255.0)
    return np.stack(masks)


COLOUR_RGB = np.array([COLOURS[c][1] for c in VOCAB.colour], dtype=np.float32)


def _shade(rgb: np.ndarray) -> np.ndarray:
    """The pattern's second tone: the colour pulled toward black (light colours) or white (dark)."""
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    toward = np.where(lum[..., None] > 0.4, 0.0, 1.0).astype(np.float32)
    return rgb + 0.6 * (toward - rgb)


SHADE_RGB = _shade(COLOUR_RGB)


@dataclass
class SceneBatch:
    """Factor indices and nuisance parameters of a batch of scenes (all arrays of length B)."""

    shape: np.ndarray
    colour: np.ndarray
    pattern: np.ndarray
    background: np.ndarray
    center: np.ndarray  # (B, 2) pixel coordinates (x, y)
    half_size: np.ndarray  # (B,) pixels
    rotation: np.ndarray  # (B,) radians
    seed: np.ndarray  # (B,) per-image texture seed

    def __len__(self) -> int:
        return len(self.shape)

    def __getitem__(self, rows: slice) -> SceneBatch:
        return SceneBatch(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def sample_scenes(
    rng: np.random.Generator,
    n: int,
    fixed: dict[str, np.ndarray | int] | None = None,
    size: np.ndarray | None = None,
    position: np.ndarray | None = None,
) -> SceneBatch:
    """Sample n scenes; ``fixed`` pins factor indices, ``size``/``position`` pin named nuisances (-1 = free).

    ``size`` holds indices into SIZES, ``position`` indices into POSITIONS.
    """
    fixed = fixed or {}
    factors = {}
    for factor in ("shape", "colour", "pattern", "background"):
        drawn = rng.integers(0, len(VOCAB.values(factor)), n)
        if factor in fixed:
            pinned = np.broadcast_to(np.asarray(fixed[factor]), (n,))
            drawn = np.where(pinned >= 0, pinned, drawn)
        factors[factor] = drawn
    size_names = list(SIZES)
    size_idx = rng.integers(0, len(size_names), n) if size is None else np.where(size >= 0, size, rng.integers(0, 3, n))
    lo = np.array([SIZE_RANGES[s][0] for s in size_names])[size_idx]
    hi = np.array([SIZE_RANGES[s][1] for s in size_names])[size_idx]
    half = rng.uniform(lo, hi)
    margin = IMAGE_SIZE / 2 - half - 0.5
    offset = rng.uniform(-1, 1, (n, 2))
    if position is not None:
        anchors = np.array([POSITIONS[p][1] for p in POSITIONS], dtype=np.float64)
        named = position >= 0
        jitter = rng.uniform(-0.15, 0.15, (n, 2))
        offset = np.where(named[:, None], np.clip(anchors[np.maximum(position, 0)] + jitter, -1, 1), offset)
    center = IMAGE_SIZE / 2 + offset * margin[:, None]
    rotation = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, n))
    seed = rng.integers(0, 2**31 - 1, n)
    return SceneBatch(center=center, half_size=half, rotation=rotation, seed=seed, **factors)


def _backgrounds(batch: SceneBatch, ys: np.ndarray, xs: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) background images on the supersampled grid; each texture is a few array ops."""
    n = len(batch)
    h = ys / IMAGE_SIZE  # 0 .. 1, top to bottom
    out = np.empty((n, *ys.shape, 3), dtype=np.float32)
    phase = (batch.seed % 97).astype(np.float32)[:, None, None]
    for k, name in enumerate(VOCAB.background):
        sel = batch.background == k
        if not sel.any():
            continue
        nz = noise[sel][..., None]
        ph = phase[sel]
        if name == "sand":
            img = np.array([0.91, 0.80, 0.58]) + 0.05 * nz
        elif name == "sky":
            img = np.array([0.50, 0.72, 0.95]) + (h[..., None] * np.array([0.35, 0.22, 0.05]))[None]
            img = np.broadcast_to(img, (sel.sum(), *ys.shape, 3))
        elif name == "grass":
            blades = np.sin(xs[None] * 2.1 + ph + 3 * nz[..., 0])[..., None]
            img = np.array([0.42, 0.66, 0.30]) + 0.06 * blades * np.array([1, 1.2, 0.6])
        elif name == "night":
            stars = (nz > 2.3).astype(np.float32)
            img = np.array([0.05, 0.06, 0.17]) + 0.8 * stars
        elif name == "brick":
            row = np.floor(ys / 6.0)
            shift = (row % 2) * 5.0
            mortar = ((ys % 6.0) < 1.0) | (((xs + shift) % 10.0) < 1.0)
            img = np.where(mortar[None, ..., None], np.array([0.82, 0.79, 0.72]), np.array([0.66, 0.33, 0.27]))
            img = img + 0.03 * nz
        elif name == "snow":
            img = np.array([0.95, 0.96, 0.99]) + 0.02 * nz
        elif name == "wood":
            grain = np.sin(ys[None] * 1.3 + 0.6 * np.sin(xs[None] * 0.35 + ph) + ph)[..., None]
            img = np.array([0.63, 0.45, 0.27]) + 0.07 * grain
        elif name == "concrete":
            img = np.array([0.60, 0.60, 0.58]) + 0.06 * nz
        else:  # pragma: no cover
            raise ValueError(name)
        out[sel] = img.astype(np.float32, copy=False)
    return out


def _pattern_mix(batch: SceneBatch, lx: np.ndarray, ly: np.ndarray, r: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """(B, H, W) weight of the second tone per pixel, from object-centred unrotated offsets in pixels.

    Textures repeat every 6-10 px: with 4-6 px periods the denoiser (16x16 latent of 2x2-pixel cells)
    drew checkered, crosshatched, zigzag, ringed and diagonal as noisy mosaics (pattern agreement 0.54).
    """
    mix = np.zeros_like(lx, dtype=np.float32)
    half = batch.half_size[:, None, None]
    for k, name in enumerate(VOCAB.pattern):
        sel = batch.pattern == k
        if not sel.any():
            continue
        x, y = lx[sel], ly[sel]
        if name == "solid":
            m = np.zeros_like(x)
        elif name == "striped":
            m = np.floor(y / 2.0) % 2
        elif name == "diagonal":
            m = np.floor((x + y) / 5.0) % 2
        elif name == "dotted":
            gx, gy = (x % 8.0) - 4.0, (y % 8.0) - 4.0
            m = (gx**2 + gy**2 < 5.0).astype(np.float32)
        elif name == "checkered":
            m = (np.floor(x / 5.0) + np.floor(y / 5.0)) % 2
        elif name == "crosshatched":
            m = (((x % 7.0) < 2.0) | ((y % 7.0) < 2.0)).astype(np.float32)
        elif name == "gradient":
            m = np.clip((y / half[sel] + 1) / 2, 0, 1)
        elif name == "speckled":
            m = (noise[sel] > 0.5).astype(np.float32)
        elif name == "twotone":
            m = (x > 0).astype(np.float32)
        elif name == "zigzag":
            tri = np.abs((x % 10.0) - 5.0)
            m = np.floor((y + tri) / 3.0) % 2
        elif name == "ringed":
            m = np.floor(r[sel] / 3.0) % 2
        elif name == "outlined":
            m = np.zeros_like(x)  # handled as a hollow interior in render_scenes
        else:  # pragma: no cover
            raise ValueError(name)
        mix[sel] = m
    return mix


def _sample_template(templates: np.ndarray, shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Nearest-neighbour lookup of soft template coverage at unit-box coordinates (u, v); 0 outside."""
    t = TEMPLATE_SIZE
    iu = ((u + 1) * ((t - 1) / 2) + 0.5).astype(np.int32)
    iv = ((v + 1) * ((t - 1) / 2) + 0.5).astype(np.int32)
    inside = (iu >= 0) & (iu < t) & (iv >= 0) & (iv < t)
    np.clip(iu, 0, t - 1, out=iu)
    np.clip(iv, 0, t - 1, out=iv)
    return templates[shape[:, None, None], iv, iu] * inside


RENDER_CHUNK = 256  # scenes per pass: its (B, 32, 32) arrays stay in cache (10,000 scenes: ~1.3x one pass)


def render_scenes(batch: SceneBatch) -> np.ndarray:
    """Render a batch to uint8 images of shape (B, 32, 32, 3); the same images whatever the chunking."""
    n = len(batch)
    noise_rng = np.random.default_rng(int(batch.seed.astype(np.uint64).sum()) if n else 0)
    noise = noise_rng.standard_normal((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for start in range(0, n, RENDER_CHUNK):
        rows = slice(start, start + RENDER_CHUNK)
        out[rows] = _render_chunk(batch[rows], noise[rows])
    return out


def _render_chunk(batch: SceneBatch, noise: np.ndarray) -> np.ndarray:
    grid = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
    ys, xs = np.meshgrid(grid, grid, indexing="ij")
    dx = xs[None] - batch.center[:, 0, None, None].astype(np.float32)
    dy = ys[None] - batch.center[:, 1, None, None].astype(np.float32)
    cos = np.cos(batch.rotation).astype(np.float32)[:, None, None]
    sin = np.sin(batch.rotation).astype(np.float32)[:, None, None]
    inv_half = (1.0 / batch.half_size).astype(np.float32)[:, None, None]
    # Inverse rotation into the object frame, then scale to the unit box.
    u, v = (cos * dx + sin * dy) * inv_half, (cos * dy - sin * dx) * inv_half
    templates = shape_templates()
    alpha = _sample_template(templates, batch.shape, u, v)

    outlined = batch.pattern == VOCAB.index("pattern", "outlined")
    if outlined.any():
        # Hollow: keep a band about 2 px wide inside the edge.
        grow = 1.0 / (1.0 - 2.2 * inv_half[outlined])
        inner = _sample_template(templates, batch.shape[outlined], u[outlined] * grow, v[outlined] * grow)
        alpha[outlined] *= 1.0 - inner

    # Contour: about one pixel just outside the shape, for contrast against any background.
    shrink = 1.0 / (1.0 + inv_half)
    contour = np.clip(_sample_template(templates, batch.shape, u * shrink, v * shrink) - alpha, 0, 1)
    contour[outlined] = 0.0

    colour = COLOUR_RGB[batch.colour][:, None, None, :]
    shade = SHADE_RGB[batch.colour][:, None, None, :]
    mix = _pattern_mix(batch, dx, dy, np.sqrt(dx * dx + dy * dy), noise)[..., None]
    fill = colour + mix * (shade - colour)

    img = _backgrounds(batch, ys, xs, noise)
    bg_lum = img.mean(axis=(1, 2, 3))
    edge = np.where(bg_lum > 0.35, 0.1, 0.9).astype(np.float32)[:, None, None, None]
    img += (0.5 * contour[..., None]) * (edge - img)
    img += alpha[..., None] * (fill - img)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def render(rng: np.random.Generator, n: int, **kwargs) -> tuple[np.ndarray, SceneBatch]:
    batch = sample_scenes(rng, n, **kwargs)
    return render_scenes(batch), batch


def render_concepts(rng: np.random.Generator, concepts: list[dict[str, str]]) -> np.ndarray:
    """Images (N, 32, 32, 3) of concepts given as factor dicts: each named factor pinned, every other one drawn.

    The one way to render "images of a concept" (the protocol's SW-FID references, the white-box attacks'
    training images)."""
    fixed = {f: np.array([VOCAB.index(f, c[f]) if f in c else -1 for c in concepts]) for f in FACTOR_NAMES}
    images, _ = render(rng, len(concepts), fixed=fixed)
    return images
