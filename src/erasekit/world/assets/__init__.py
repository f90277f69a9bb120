"""Weights shipped inside the package (see MODEL_CARD.md beside this file)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent


def denoiser_dir() -> Path:
    return ASSETS / "denoiser"


def classifier_dir() -> Path:
    return ASSETS / "classifier"
