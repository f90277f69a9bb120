"""``load_backbone(model)``: "shapeworld" or a local diffusers model folder -> a Backbone.

Importing this module does not import diffusers: the adapters load it when a pipeline is loaded.
"""

from __future__ import annotations

from pathlib import Path

from erasekit.backbones.base import Backbone
from erasekit.backbones.diffusers_common import DiffusersBackbone, read_model_index
from erasekit.backbones.sd import StableDiffusionBackbone
from erasekit.backbones.sd3 import StableDiffusion3Backbone
from erasekit.backbones.sdxl import StableDiffusionXLBackbone
from erasekit.errors import UserError

SHAPEWORLD = "shapeworld"

FAMILIES: dict[str, type[DiffusersBackbone]] = {
    cls.family: cls for cls in (StableDiffusionBackbone, StableDiffusionXLBackbone, StableDiffusion3Backbone)
}
PIPELINE_FAMILIES: dict[str, str] = {cls.pipeline_class: family for family, cls in FAMILIES.items()}


def family_for_folder(folder: Path) -> str:
    """The family of a local diffusers folder, from its model_index.json ``_class_name``."""
    class_name = read_model_index(folder)["_class_name"]
    if class_name not in PIPELINE_FAMILIES:
        supported = ", ".join(PIPELINE_FAMILIES)
        raise UserError(f"unsupported pipeline class {class_name} in {folder}; supported: {supported}")
    return PIPELINE_FAMILIES[class_name]


def load_backbone(model: str | Path) -> Backbone:
    """The shipped ShapeWorld model for "shapeworld", else the local diffusers folder (sd, sdxl, sd3)."""
    if isinstance(model, str) and model == SHAPEWORLD:
        from erasekit.backbones.shapeworld import ShapeWorldBackbone

        return ShapeWorldBackbone.load()
    folder = Path(model).expanduser()
    return FAMILIES[family_for_folder(folder)].load(folder)
