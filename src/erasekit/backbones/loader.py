"""``load_backbone(model)``: "shapeworld", a local diffusers model folder, or a diffusers pipeline object the user
already holds -> a Backbone.

Importing this module does not import diffusers: the adapters load it when a pipeline is loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from erasekit.backbones.base import Backbone
from erasekit.backbones.diffusers_common import DiffusersBackbone, PipelineOptions, read_model_index
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


def load_backbone(
    model: str | Path | object,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    options: PipelineOptions = PipelineOptions(),
) -> Backbone:
    """The shipped ShapeWorld model for "shapeworld"; the local diffusers folder (sd, sdxl, sd3) for a path; for a
    diffusers pipeline object (StableDiffusionPipeline, StableDiffusionXLPipeline, StableDiffusion3Pipeline) the
    pipeline itself, wrapped without reloading: it stays on its device in its dtype unless ``device`` / ``dtype``
    are given, and an edit applied to the backbone is applied to it. A Backbone is returned as it is.

    ``device`` ("auto", "cpu", "cuda", "cuda:N", "mps") and ``dtype`` ("auto", "float32", "float16", "bfloat16")
    are resolved by ``utils/devices.resolve``; None loads a model on the CPU in float32 (a pipeline object: as it
    is). Under ``accelerate launch``, "auto" is each process's own device. ``options``: diffusers' memory switches
    and SD3 without T5 (diffusers models only; a pipeline object takes the memory switches)."""
    if isinstance(model, str) and model == SHAPEWORLD:
        from erasekit.backbones.shapeworld import ShapeWorldBackbone

        options.check(None, None)
        return ShapeWorldBackbone.load(None, *placement(device, dtype))
    if isinstance(model, str | Path):
        device, dtype = placement(device, dtype)  # a device this machine lacks: refused before the folder is read
        folder = Path(model).expanduser()
        return FAMILIES[family_for_folder(folder)].load(folder, device, dtype, options)
    if (family := family_for_pipeline(model)) is not None:
        if options.without_t5:
            raise UserError("--without-t5 applies when loading a folder; a pipeline object is used as it is")
        return FAMILIES[family].wrap(model, *_given(device, dtype, getattr(model, "device", None)), options.memory)
    if isinstance(model, Backbone):
        return model
    supported = ", ".join(PIPELINE_FAMILIES)
    raise UserError(f"cannot use a {type(model).__name__} as a model: give 'shapeworld', a folder or a {supported}")


def placement(
    device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) a model loads on; None is "auto", and "auto" under ``accelerate launch`` is the process's own
    device (a UserError, before anything loads, for a device this machine lacks)."""
    from erasekit.utils.devices import resolve
    from erasekit.utils.distributed import process_device

    if device is None or str(device).strip().lower() == "auto":
        device = process_device() or "auto"
    return resolve(device, dtype)


def _given(
    device: str | torch.device | None, dtype: str | torch.dtype | None, current: torch.device | None
) -> tuple[torch.device | None, torch.dtype | None]:
    """For a pipeline object: only what is given (None keeps the pipeline's own device or dtype)."""
    from erasekit.utils.devices import available, resolve_device, resolve_dtype

    have = available()
    chosen = resolve_device(device, have) if device is not None else None
    target = chosen or current or torch.device("cpu")
    return chosen, resolve_dtype(dtype, target, have) if dtype is not None else None


def default_world() -> World:
    """The embedded world (ShapeWorld), without loading its model."""
    from erasekit.backbones.shapeworld import ShapeWorldBackbone

    return ShapeWorldBackbone.world


def world_for(model: str | Path) -> World | None:
    """The world of the model ``load_backbone(model)`` loads, without loading it: the embedded world for
    "shapeworld", None for a diffusers folder (free concept names; the Stable Diffusion protocol)."""
    return default_world() if isinstance(model, str) and model == SHAPEWORLD else None
