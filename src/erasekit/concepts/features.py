"""Features of prompts as the edited linear maps see them: ``encode()`` outputs (what the denoiser's
projectors read) and the inputs of text-encoder layers, captured with forward hooks."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn

from erasekit.backbones.base import Backbone, TokenSegment
from erasekit.concepts.pairs import Alignment, ConceptSet, align_segments, token_positions


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
