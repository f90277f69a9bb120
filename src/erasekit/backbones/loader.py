"""``load_backbone(model)``: "shapeworld", a local diffusers model folder, or a diffusers pipeline object the user
already holds -> a Backbone.

Importing this module does not import diffusers: the adapters load it when a pipeline is loaded.
"""

from __future__ import annotations

from pathlib import Path

from erasekit.backbones.base import Backbone
from erasekit.backbones.diffusers_common import DiffusersBackbone, read_model_index
from erasekit.backbones.sd import StableDiffusionBackbone
from erasekit.backbones.sd3 import StableDiffusion3Backbone
from erasekit.backbones.sdxl import StableDiffusionXLBackbone
from erasekit.backbones.world import World
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


def family_for_pipeline(pipe: object) -> str | None:
    """The family of a diffusers pipeline object (its class or a base class is a supported pipeline class), or
    None for an object that is no pipeline erasekit knows."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in PIPELINE_FAMILIES and cls.__module__.startswith("diffusers"):
            return PIPELINE_FAMILIES[cls.__name__]
    return None


def load_backbone(model: str | Path | object) -> Backbone:
    """The shipped ShapeWorld model for "shapeworld"; the local diffusers folder (sd, sdxl, sd3) for a path; for a
    diffusers pipeline object (StableDiffusionPipeline, StableDiffusionXLPipeline, StableDiffusion3Pipeline) the
    pipeline itself, wrapped without reloading: it stays on its device in its dtype, and an edit applied to the
    backbone is applied to it. A Backbone is returned as it is."""
    if isinstance(model, str) and model == SHAPEWORLD:
        from erasekit.backbones.shapeworld import ShapeWorldBackbone

        return ShapeWorldBackbone.load()
    if isinstance(model, str | Path):
        folder = Path(model).expanduser()
        return FAMILIES[family_for_folder(folder)].load(folder)
    if (family := family_for_pipeline(model)) is not None:
        return FAMILIES[family].wrap(model)
    if isinstance(model, Backbone):
        return model
    supported = ", ".join(PIPELINE_FAMILIES)
    raise UserError(f"cannot use a {type(model).__name__} as a model: give 'shapeworld', a folder or a {supported}")


def default_world() -> World:
    """The embedded world (ShapeWorld), without loading its model."""
    from erasekit.backbones.shapeworld import ShapeWorldBackbone

    return ShapeWorldBackbone.world


def world_for(model: str | Path) -> World | None:
    """The world of the model ``load_backbone(model)`` loads, without loading it: the embedded world for
    "shapeworld", None for a diffusers folder (free concept names; the Stable Diffusion protocol)."""
    return default_world() if isinstance(model, str) and model == SHAPEWORLD else None
