"""Feature capture (concepts/features.py): the progressive stages' resumed passes (and the final states) equal
full passes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from erasekit.backbones.loader import load_backbone
from erasekit.concepts.features import capture
from erasekit.methods.erasepro import ProgressiveTargets, chain_layers
from tiny_pipelines import build_sd, build_sd3_t5

pytestmark = pytest.mark.usefixtures("one_thread")

BUILDERS = {"sd": build_sd, "sd3_t5": build_sd3_t5}


@pytest.mark.parametrize("family", ["shapeworld", "sd", "sd3_t5"])
def test_progressive_targets_equal_full_passes_of_the_model_as_edited(family: str, tmp_path: Path):
    backbone = load_backbone("shapeworld" if family == "shapeworld" else str(BUILDERS[family](tmp_path / family)))
    chain = chain_layers(backbone)
    prompts = ["a red cat on grass", "a cat", "the photo of a big cat", "cats"]
    progressive = ProgressiveTargets(backbone, prompts, batch_size=3)  # two batches of different lengths
    originals = [module.weight.detach().clone() for _, module in chain]
    replayed = 0
    try:
        for name, module in chain:
            located, record = progressive._blocks(name), progressive.recorded
            resumed = bool(located and record and record[0] is located[0])  # same block list: the pass resumes
            full = capture(backbone, prompts, {name: module}, 3, stop_after=name)[1][name]
            torch.testing.assert_close(progressive.inputs(name, module), full, rtol=1e-5, atol=1e-5)
            replayed += resumed and progressive.recorded is not None
            with torch.no_grad():  # an edit every later stage must see
                module.weight.add_(0.5 * torch.randn_like(module.weight) * module.weight.std())
        # the final states replay the last record too, and still equal a full pass of the edited model
        torch.testing.assert_close(
            progressive.states(), capture(backbone, prompts, batch_size=3)[0], rtol=1e-5, atol=1e-5
        )
    finally:
        with torch.no_grad():
            for (_, module), weight in zip(chain, originals, strict=True):
                module.weight.copy_(weight)
    assert replayed >= 1  # some stage resumed from a recorded block instead of a full pass


@pytest.mark.parametrize("record", [0, 2, 4, 5])  # none; inside the first batch; across batches; all
def test_capture_keeps_the_inputs_of_the_first_prompts_only(record: int):
    backbone = load_backbone("shapeworld")
    name, module = chain_layers(backbone)[0]
    prompts = ["a red cat on grass", "a cat", "the photo of a big cat", "cats", "a blue striped star"]
    states, full = capture(backbone, prompts, {name: module}, batch_size=3)
    kept_states, kept = capture(backbone, prompts, {name: module}, batch_size=3, record=record)
    assert kept[name].shape[0] == record
    torch.testing.assert_close(kept_states, states)
    torch.testing.assert_close(kept[name], full[name][:record, : kept[name].shape[1]])
