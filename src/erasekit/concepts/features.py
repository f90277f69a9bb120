"""Features of prompts as the edited linear maps see them: ``encode()`` outputs (what the denoiser's
projectors read) and the inputs of text-encoder layers, captured with forward hooks."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn

from erasekit.backbones.base import Backbone, TokenSegment
from erasekit.concepts.pairs import Alignment, ConceptSet, align_segments, token_positions
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


class _StopForward(Exception):
    """Raised by a hook once every wanted input is captured: the rest of the forward pass is skipped."""


@contextmanager
def _input_hooks(
    modules: dict[str, nn.Linear], store: dict[str, list[torch.Tensor]], stop_after: str | None, keep: list[int]
):
    """Record each module's input, its first ``keep[0]`` rows (the caller sets it per batch)."""

    def hook(name):
        def record(_module, inputs, _output):
            store[name].append(inputs[0].detach()[: keep[0]].float().clone())
            if name == stop_after:
                raise _StopForward

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _stack_padded(chunks: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate (b, L_i, d) chunks along the batch, zero-padding L to the longest."""
    if len(chunks) == 1:
        return chunks[0]  # one batch: nothing to pad, no copy
    length = max(c.shape[1] for c in chunks)
    return torch.cat([nn.functional.pad(c, (0, 0, 0, length - c.shape[1])) for c in chunks])


@torch.no_grad()
def capture(
    backbone: Backbone,
    prompts: list[str],
    modules: dict[str, nn.Linear] | None = None,
    batch_size: int = 64,
    stop_after: str | None = None,
    around_batch: Callable[[int], AbstractContextManager] | None = None,
    record: int | None = None,
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """(encode() states (B, L, D), {module name: its inputs (B', L_enc, d_in)}) for the prompts.

    The modules' inputs are kept for the first ``record`` prompts (B' of them; default all): the others
    share the batches, and only their states are wanted. With ``stop_after`` (a module name) the forward
    pass ends once that module's input is captured; no states are returned then. ``around_batch(k)`` is
    entered around the k-th batch's pass.
    """
    modules = modules or {}
    store: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    states = []
    keep = [0]
    with _input_hooks(modules, store, stop_after, keep):
        for start in range(0, len(prompts), batch_size):
            keep[0] = batch_size if record is None else max(0, record - start)
            try:
                with around_batch(start // batch_size) if around_batch else nullcontext():
                    states.append(backbone.encode(prompts[start : start + batch_size])[0].float())
            except _StopForward:
                pass
            batches = start // batch_size + 1
            for name, chunks in store.items():
                if len(chunks) != batches:
                    raise RuntimeError(f"{name} ran {len(chunks)} times for {batches} batches; cannot capture it")
    return (torch.cat(states) if states else None), {name: _stack_padded(c) for name, c in store.items()}


def gather(features: torch.Tensor, prompt: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Columns (d, K) float64: features[prompt[k], positions[k]]."""
    return features[prompt, positions].double().T.contiguous()


def encoded_columns(
    states: torch.Tensor, alignments: list[Alignment], segments: list[TokenSegment], side: str
) -> torch.Tensor:
    """Columns of ``encode()`` states at aligned positions of every segment (offsets applied)."""
    cols = [gather(states, a.prompt, getattr(a, side) + segments[a.segment].offset) for a in alignments if len(a)]
    return torch.cat(cols, dim=1)


def layer_columns(inputs: torch.Tensor, alignments: list[Alignment], segment: int, side: str) -> torch.Tensor:
    """Columns of a text layer's inputs at the aligned positions of its own segment."""
    a = alignments[segment]
    return gather(inputs, a.prompt, getattr(a, side))


class PairFeatures:
    """Target/anchor prompt pairs of a concept set with their token alignment, and the preserved prompts."""

    def __init__(self, backbone: Backbone, concepts: ConceptSet):
        self.targets, self.anchors = concepts.pairs()
        self.preserve = concepts.preserve_prompts()
        self.target_segments = backbone.token_segments(self.targets)
        self.anchor_segments = backbone.token_segments(self.anchors)
        self.preserve_segments = backbone.token_segments(self.preserve)
        self.alignments = align_segments(self.target_segments, self.anchor_segments)
        self.preserve_positions = token_positions(self.preserve_segments)

    def encoded(
        self, states_t: torch.Tensor, states_a: torch.Tensor, states_p: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """(X, Y, C_P) for the projectors, from encode() states of targets, anchors and preserved prompts."""
        return (
            encoded_columns(states_t, self.alignments, self.target_segments, "target"),
            encoded_columns(states_a, self.alignments, self.anchor_segments, "anchor"),
            encoded_columns(states_p, self.preserve_positions, self.preserve_segments, "target"),
        )

    def split(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split features of ``targets + anchors + preserve`` (in that order) into the three groups."""
        n_t, n_a = len(self.targets), len(self.anchors)
        return features[:n_t], features[n_t : n_t + n_a], features[n_t + n_a :]


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
