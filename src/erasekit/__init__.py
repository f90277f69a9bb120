"""erasekit: erase concepts from text-to-image diffusion models, and measure that it held.

The Python API, on the shipped ShapeWorld model or a diffusers pipeline you already hold (a ``StableDiffusionPipeline``,
SDXL or SD3 object, on its own device and in its own dtype) or a local diffusers folder:

>>> import erasekit
>>> model = erasekit.load_model("shapeworld")
>>> edit = erasekit.erase(model, ["star"], method="uce", anchor="shape", ridge=0.5)
>>> edit.method, edit.concepts["targets"]
('uce', ['star'])
>>> with edit.applied(model):  # the edit in place inside the block, removed on the way out
...     images = model.generate(["a red star"], seeds=[0], steps=2)
>>> images.shape
(1, 32, 32, 3)

``edit.save(folder)`` writes the artifact, ``erasekit.load_artifact(folder)`` reads it back, ``edit.apply(pipe)`` /
``edit.remove(pipe)`` edit a pipeline in place and back, and ``erasekit.evaluate`` measures an edit with the
backbone's own protocol (ShapeWorld's classifier here; CLIP, FID / KID and NudeNet on a diffusers model):

>>> held_out = [("red star on snow", "shape=star", "target"), ("blue heart on snow", "shape=heart", "preserve")]
>>> rows = erasekit.prompt_rows(held_out)  # phrasings the edit never fitted
>>> metrics = erasekit.evaluate(model, rows, edit, steps=2)
>>> sorted(k for k in metrics["overall"] if k in ("acc_e", "acc_s", "h"))
['acc_e', 'acc_s', 'h']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from erasekit.artifacts import Artifact
    from erasekit.backbones.base import Backbone

__all__ = ["erase", "evaluate", "load_artifact", "load_model", "prompt_rows"]


def load_model(
    model: str | Path | Any,
    device: str | None = None,
    dtype: str | None = None,
    *,
    memory: Sequence[str] = (),
    without_t5: bool = False,
) -> Backbone:
    """A backbone for ``"shapeworld"``, a local diffusers folder, or a diffusers pipeline object (wrapped, not
    reloaded: an edit applied to the backbone is applied to that pipeline).

    ``device`` is "auto", "cpu", "cuda", "cuda:N" or "mps"; ``dtype`` "auto", "float32", "float16" or "bfloat16"
    (torch devices and dtypes work too). None is "auto" when loading (the GPU in half precision if there is one,
    else the CPU in float32); a pipeline object keeps its own device and dtype unless they are given. ``memory``:
    diffusers' switches "attention-slicing", "vae-tiling", "cpu-offload" (CUDA); ``without_t5``: an SD3 folder
    without its T5 encoder (an edit records the text encoders it was fitted with and applies only to the same)."""
    from erasekit.backbones.diffusers_common import PipelineOptions
    from erasekit.backbones.loader import load_backbone

    return load_backbone(model, device, dtype, PipelineOptions(tuple(memory), without_t5))


def erase(
    model: str | Path | Any,
    targets: Sequence[str],
    method: str = "erasepro",
    *,
    anchor: str = "",
    preserve: Sequence[str] = (),
    mapping_pool: Sequence[str] = (),
    kind: str = "object",
    templates: Sequence[str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    **settings: Any,
) -> Artifact:
    """Erase ``targets`` with a registered ``method`` and return the edit (an ``Artifact``); the model is left as it
    was. ``settings`` are the method's config fields (``ridge=0.3``, ``eraser="moe"``, ...), checked as ``erase --set``
    checks them. A method that maps targets onto a pool (ETC) takes ``mapping_pool``; the others map every target onto
    ``anchor`` and keep ``preserve``. ``device`` and ``dtype`` are ``load_model``'s."""
    from erasekit.concepts.pairs import ConceptSet
    from erasekit.methods import get_method
    from erasekit.methods.base import erase_to_artifact, method_config
    from erasekit.utils.options import typed_settings

    chosen = get_method(method)
    options = typed_settings(chosen.config_class, settings, f"method {method}")
    method_config(method, options)  # ranges checked before the model loads
    if getattr(chosen.config_class, "MAPS_ONTO_POOL", False):
        concepts = ConceptSet.build(list(targets), "", list(mapping_pool))
    else:
        concepts = ConceptSet.build(list(targets), anchor, list(preserve), kind, list(templates) if templates else None)
    backbone = load_model(model, device, dtype)
    return erase_to_artifact(backbone, concepts, method, options)


def load_artifact(path: str | Path) -> Artifact:
    """Read and verify an edit artifact folder (every problem is a one-line ``UserError``)."""
    import erasekit.methods  # noqa: F401  (registers the methods' artifact plug-ins)
    from erasekit.artifacts import load_artifact as read

    return read(Path(path))


def prompt_rows(prompts: Sequence[tuple[str, str, str]], seed: int = 0) -> list:
    """Prompt rows from (prompt, concept, role) triples, ``role`` "target" or "preserve", seeded ``seed`` onwards:
    what a prompt CSV holds, without the file."""
    from erasekit.eval.prompts import PromptRow

    return [PromptRow(text, seed + k, k, concept, role) for k, (text, concept, role) in enumerate(prompts)]


def evaluate(
    model: str | Path | Any,
    prompts: str | Path | Sequence,
    edit: Artifact | None = None,
    *,
    clip: str | Path | None = None,
    num_images: int = 1,
    steps: int | None = None,
    guidance: float | None = None,
    device: str | None = None,
    dtype: str | None = None,
    **protocol_options: Any,
) -> dict:
    """Generate ``prompts`` (a prompt CSV, or ``prompt_rows``) with and without ``edit`` on the same seeds and measure
    them with the backbone's protocol; returns its metrics (``metrics["overall"]``: Acc_e, Acc_s, H, ...). A diffusers
    model needs ``clip`` (a local CLIP folder) and takes the Stable Diffusion protocol's options (``reference_dir``,
    ``nudenet``, ``template``, ``inception_weights``). An edit is judged only on prompts it was not fitted on.
    ``steps`` and ``guidance`` default to the model's own (``sampling_defaults()``); ``device`` and ``dtype`` are
    ``load_model``'s."""
    from erasekit.backbones.world import world_of
    from erasekit.eval.generation import EvalSettings
    from erasekit.eval.prompts import load_prompts
    from erasekit.eval.protocols import protocol_for
    from erasekit.methods.base import check_edit_heldout

    settings = EvalSettings(num_images=num_images, steps=steps, guidance=guidance)
    backbone = load_model(model, device, dtype)
    world = world_of(backbone)
    rows = (
        load_prompts(Path(prompts), require_concepts=world is not None, world=world)
        if isinstance(prompts, str | Path)
        else list(prompts)
    )
    protocol = protocol_for(backbone, clip, **protocol_options)
    if edit is not None:
        check_edit_heldout(backbone, edit, [r.prompt for r in rows])
    metrics, _, _ = protocol.evaluate(backbone, rows, settings, edit=edit, progress=False)
    return metrics
