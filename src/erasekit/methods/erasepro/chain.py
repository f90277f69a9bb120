"""ErasePro's progressive chain (specs/erasepro.md section 3): which text-encoder maps it edits, shallow to deep,
and how each stage sees the target prompts' inputs from the model as edited by the stages before it."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn

from erasekit.backbones.base import Backbone, TokenSegment
from erasekit.concepts.features import capture
from erasekit.errors import UserError

# The default progressive chain: the MLP output projection of every text-encoder layer
# (specs/erasepro.md section 3): CLIP mlp.fc2, BERT/MiniLM layer.N.output.dense, T5 DenseReluDense.wo.
CHAIN_PATTERNS = {
    "mlp_out": r"(mlp\.fc2|layer\.\d+\.output\.dense|DenseReluDense\.wo)$",
    "attn_out": r"(self_attn\.out_proj|attention\.output\.dense|SelfAttention\.o)$",
}


def chain_layers(backbone: Backbone, chain: str = "mlp_out", first: int | None = None) -> list[tuple[str, nn.Linear]]:
    """The text-encoder maps the progressive edit walks through, shallow to deep (per encoder: first k)."""
    pattern = re.compile(CHAIN_PATTERNS[chain])
    layers = [(name, m) for name, m in backbone.text_layers() if pattern.search(name)]
    if first is None:
        return layers
    depth = max(Counter(encoder_of(name) for name, _ in layers).values(), default=0)
    if first > depth:
        raise UserError(f"--chain-layers {first}: the text encoder has only {depth} layers")
    counts: dict[str, int] = {}
    kept = []
    for name, module in layers:
        encoder = encoder_of(name)
        counts[encoder] = counts.get(encoder, 0) + 1
        if counts[encoder] <= first:
            kept.append((name, module))
    return kept


def encoder_of(layer_name: str) -> str:
    return layer_name.split(".", 1)[0]


def segment_of(layer_name: str, segments: list[TokenSegment]) -> int:
    """Index of the token segment whose positions the layer's hidden states use."""
    encoder = encoder_of(layer_name)
    for s, seg in enumerate(segments):
        if encoder in seg.encoders:
            return s
    raise ValueError(f"no token segment covers text encoder {encoder!r}")


@contextmanager
def edit_on_arrival(chain: list[tuple[str, nn.Linear]], edit: Callable[[int, str, nn.Linear, torch.Tensor], None]):
    """Forward pre-hooks on the chain maps: when map i's input arrives, ``edit(i, name, module, input)`` runs
    (it may rewrite the weight), then the map computes with the edited weight.

    One forward pass of a batch then walks the whole progressive chain: every map sees its input from the
    model as edited by the maps before it. The edit runs outside inference mode, so the weights it makes
    are ordinary tensors.
    """

    arrived: set[str] = set()

    def hook(i, name):
        def arrive(module, args):
            if name in arrived:  # a second batch would be edited again, by its own inputs only
                raise RuntimeError(f"{name} ran twice: edit_on_arrival needs the prompts in one batch")
            arrived.add(name)
            with torch.inference_mode(False), torch.no_grad():
                edit(i, name, module, args[0].detach().float().clone())

        return arrive

    handles = [module.register_forward_pre_hook(hook(i, name)) for i, (name, module) in enumerate(chain)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


_BLOCK = re.compile(r"^(?P<prefix>[^.]+)\.(?P<blocks>.+\.(?:layer|layers|block))\.(?P<index>\d+)\.")


class _Replay(nn.Module):
    """Stands in for a text-encoder block: returns a recorded block output instead of computing."""

    def __init__(self, output: object):
        super().__init__()
        self.output = output

    def forward(self, *args, **kwargs):
        return self.output


class ProgressiveTargets:
    """The target prompts' inputs of chain layer i from the model as edited in stages < i.

    Each pass records the output of the block before the one it stops in; the next stage's pass
    replays that output for all earlier blocks, so it computes two blocks instead of i + 1. Blocks
    before the last edited one are unchanged since that record, so the result equals a full pass.
    ``states()`` ends the chain the same way: the edited encoder's output from the last record on.
    """

    def __init__(self, backbone: Backbone, prompts: list[str], batch_size: int):
        self.backbone, self.prompts, self.batch_size = backbone, prompts, batch_size
        # (block list, index, per-batch outputs of the block before that index)
        self.recorded: tuple[nn.ModuleList, int, list[object]] | None = None

    def _blocks(self, layer_name: str) -> tuple[nn.ModuleList, int] | None:
        match = _BLOCK.match(layer_name)
        if match is None:
            return None
        root = self.backbone.text_encoders().get(match["prefix"])
        blocks = root.get_submodule(match["blocks"]) if root is not None else None
        if not isinstance(blocks, nn.ModuleList):
            return None
        return blocks, int(match["index"])

    def inputs(self, name: str, module: nn.Linear) -> torch.Tensor:
        located = self._blocks(name)
        resume = None
        if located and self.recorded and self.recorded[0] is located[0] and self.recorded[1] < located[1]:
            resume = self.recorded
        outputs: list[object] = []
        around = self._around(resume, located, outputs)
        inputs = capture(self.backbone, self.prompts, {name: module}, self.batch_size, name, around)[1][name]
        self.recorded = (*located, outputs) if located and located[1] > 0 else None
        return inputs

    def states(self) -> torch.Tensor:
        """encode() states of the prompts from the model as edited by every stage so far: the blocks before
        the last record replay it (they are unchanged since), the rest compute."""
        return capture(
            self.backbone, self.prompts, batch_size=self.batch_size, around_batch=self._around(self.recorded)
        )[0]

    def _around(
        self,
        resume: tuple[nn.ModuleList, int, list[object]] | None,
        record: tuple[nn.ModuleList, int] | None = None,
        outputs: list[object] | None = None,
    ) -> Callable[[int], AbstractContextManager]:
        """Per batch: blocks before ``resume``'s index replay its recorded output; with ``record``
        (blocks, index) the output of the block before that index is appended to ``outputs``."""
        replayed = resume[0] if resume else None

        @contextmanager
        def around(batch: int):
            saved = list(replayed) if replayed is not None else []
            handle = None
            try:
                if resume:
                    for k in range(resume[1]):
                        replayed[k] = _Replay(resume[2][batch])
                if record and record[1] > 0:
                    handle = record[0][record[1] - 1].register_forward_hook(lambda _m, _i, out: outputs.append(out))
                yield
            finally:
                if handle is not None:
                    handle.remove()
                for k, block in enumerate(saved):
                    replayed[k] = block

        return around
