"""Which protocol judges a backbone (DESIGN.md, "Evaluation"): a backbone with a world of its own is judged by that
world's protocol (ShapeWorld: its ground-truth classifier); every other backbone by the Stable Diffusion protocol
(eval/sd/: CLIP, FID / KID, NudeNet), whose options only apply there."""

from __future__ import annotations

from pathlib import Path

from erasekit.backbones.world import EvaluationProtocol, world_of
from erasekit.errors import UserError


def protocol_for(backbone, clip_dir: str | Path | None = None, **sd_options) -> EvaluationProtocol:
    """The backbone world's protocol, else the Stable Diffusion protocol with ``clip_dir`` and ``sd_options``
    (reference_dir, nudenet, template, inception_weights, device: eval/sd/protocol.py)."""
    world = world_of(backbone)
    if world is not None:
        if clip_dir is not None or any(v is not None for v in sd_options.values()):
            options = "--clip, --reference, --inception-weights, --nudenet*"
            raise UserError(f"{options}: diffusers models only, not {world.name}")
        return world.protocol()
    if clip_dir is None:
        raise UserError("the Stable Diffusion protocol needs a local CLIP folder: --clip DIR")
    from erasekit.eval.sd.protocol import StableDiffusionProtocol

    return StableDiffusionProtocol(clip_dir, **sd_options)
