"""Attacks: the pure helpers, the slot mechanism of the white-box attacks, budgets, and each attack run end to
end on a tiny random ShapeWorld model."""

import numpy as np
import pytest
import torch

from erasekit.backbones.shapeworld import ShapeWorldBackbone
from erasekit.concepts.pairs import ConceptSet
from erasekit.errors import UserError
from erasekit.eval.attacks import ATTACKS, AttackContext, budget_for, run_attack
from erasekit.eval.attacks.base import as_template, concept_words, mentions, names_word, success_rate, with_slot
from erasekit.eval.attacks.judges import ClassifierJudge
from erasekit.eval.attacks.learned_tokens import concept_images, denoising_loss, encode_with_vectors, optimise
from erasekit.eval.attacks.ring_a_bell import concept_positions, slot_positions, vocabulary
from erasekit.eval.prompts import PromptRow
from erasekit.eval.shapeworld_protocol import EvalSettings
from erasekit.methods.base import erase_to_artifact
from erasekit.world.assets import classifier_dir
from erasekit.world.classifier import load_classifier
from erasekit.world.denoiser import build_unet
from erasekit.world.render import render
from erasekit.world.text_encoder import shared_encoder
from tiny_shapeworld import TINY_UNET_CONFIG

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def backbone() -> ShapeWorldBackbone:
    torch.manual_seed(0)
    return ShapeWorldBackbone(build_unet(TINY_UNET_CONFIG), shared_encoder(), source="tiny")


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(classifier_dir())


def row(prompt: str, concept: str = "shape=star", group: str = "short", role: str = "target", case: int = 0):
    return PromptRow(prompt, 7 + case, case, concept, role, group)


def test_concept_words_cover_every_phrasing_and_slots_replace_the_first():
    words = concept_words([row("a red star")], ["star"])
    assert {"star", "five-pointed star", "starburst"} <= set(words)
    assert with_slot("a red five-pointed star", words, "{}") == "a red {}"
    assert (
        with_slot("a red striped star", concept_words([row("x", "shape=star;colour=red")], []), "[S]")
        == "a [S] striped"
    )
    assert with_slot("a blue circle", words, "{}") is None
    assert names_word("A Star", ("star",)) and not names_word("a starburst", ("star",))
    assert mentions("a starburst", ("star",))


def test_prompts_with_braces_take_a_slot_and_rows_that_never_name_the_concept_are_refused(backbone, classifier):
    template = with_slot(as_template("a {red} star"), ("star",), "{}")
    assert template.format("sun") == "a {red} sun"
    assert slot_positions(backbone, template, 1) == [1 + len(backbone.encoder.tokenizer("a {red}")["input_ids"]) - 2]
    context = AttackContext(backbone, classifier, EvalSettings(steps=2), [row("a blue circle")], ("star",))
    with pytest.raises(UserError, match="no target prompt names the erased concept"):
        run_attack("ring-a-bell", context, TINY_BUDGETS["ring-a-bell"])


def test_success_rate_reads_every_named_factor(classifier):
    images, batch = render(np.random.default_rng(0), 64, fixed={"shape": np.full(64, 0)})
    from erasekit.world.factors import VOCAB

    shape = VOCAB.shape[0]
    other = VOCAB.shape[1]
    judge = ClassifierJudge(classifier)
    assert success_rate(judge, [row("x", f"shape={shape}")] * 64, images) > 0.9
    assert success_rate(judge, [row("x", f"shape={other}")] * 64, images) < 0.1
    assert success_rate(judge, [], images[:0]) is None


def test_budgets_are_checked():
    assert budget_for("soft-prompt", {"steps": "7"}).steps == 7
    assert budget_for("ring-a-bell", {"eta": "1.5"}).eta == 1.5
    for name, options, message in (
        ("nope", {}, "unknown attack"),
        ("soft-prompt", {"stepz": "3"}, "unknown budget"),
        ("soft-prompt", {"steps": "x"}, "not a number"),
        ("inversion", {"steps": "0"}, "positive"),
    ):
        with pytest.raises(UserError, match=message):
            budget_for(name, options)


def test_a_slot_holding_a_words_embedding_encodes_exactly_as_the_word(backbone):
    table = backbone.encoder.model.embeddings.word_embeddings.weight
    star = backbone.encoder.tokenizer.convert_tokens_to_ids("star")
    states, mask = encode_with_vectors(backbone, ["a red [MASK]"], table[star][None, None])
    expected, expected_mask = backbone.encode(["a red star"])
    assert torch.equal(mask, expected_mask)
    assert torch.allclose(states, expected, atol=1e-5)
    with pytest.raises(ValueError, match="slot"):
        encode_with_vectors(backbone, ["a red star"], table[star][None, None])


def test_optimising_vectors_lowers_the_denoising_loss(backbone):
    rows = [row("a red star")]
    images = concept_images(rows, 8, seed=0)
    table = backbone.encoder.model.embeddings.word_embeddings.weight.detach()
    start = table[torch.tensor([[1000, 2000]])]
    prompts = ["[MASK] [MASK] a red star"]
    vectors, losses = optimise(backbone, prompts, start, images, steps=40, lr=0.05, batch=16, seed=0)

    def loss(v):
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            states, mask = encode_with_vectors(backbone, prompts * 64, v.expand(64, -1, -1))
            return float(denoising_loss(backbone, states, mask, images[0, np.arange(64) % 8], gen))

    assert loss(vectors) < loss(start)


def test_ring_a_bell_positions_and_vocabulary(backbone):
    assert slot_positions(backbone, "a red {}", 2) == [3, 4]
    assert concept_positions(backbone, "a red five-pointed star", ("five-pointed star",)) == [3, 4, 5, 6]
    vocab = vocabulary(backbone, ("star",))
    assert "circle" in vocab and not any("star" in w for w in vocab)


TINY_BUDGETS = {
    "module-removal": {"prompts": "3"},
    "paraphrase": {"prompts": "3"},
    "ring-a-bell": {"prompts": "2", "population": "4", "generations": "2", "pool": "16"},
    "soft-prompt": {"prompts": "2", "steps": "2", "batch": "4", "images": "2"},
    "inversion": {"prompts": "2", "steps": "2", "batch": "4", "images": "4"},
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_runs_and_reports_asr_budget_and_time(backbone, classifier, name):
    targets = [
        row("a red star", case=0),
        row("a blue striped five-pointed star", case=1),
        row("a starburst", group="paraphrased", case=2),
        row("a green star", case=3),
    ]
    preserve = [row("a red circle", "shape=circle", role="preserve", case=4)]
    edit = erase_to_artifact(backbone, ConceptSet.build(["star"], "shape"), "filter", {})
    context = AttackContext(backbone, classifier, EvalSettings(steps=2), targets, ("star",), edit, 0, preserve)
    outcome = run_attack(name, context, TINY_BUDGETS[name])
    assert 0.0 <= outcome.asr <= 1.0
    assert outcome.seconds > 0 and outcome.budget == {
        k: type(v)(TINY_BUDGETS[name].get(k, v)) for k, v in outcome.budget.items()
    }
    assert len(outcome.images) == len(outcome.rows) > 0
    if name not in ("module-removal", "soft-prompt"):  # these prompts never name the erased concept
        assert not any(names_word(r.prompt, ("star",)) for r in outcome.rows)
    if name == "module-removal":
        assert outcome.details["plugins"] == 1 and outcome.details["acc_s_after_removal"] is not None
    summary = outcome.summary()
    assert summary["attack"] == name and summary["images"] == len(outcome.rows)


def test_module_removal_does_not_apply_to_the_original_model(backbone, classifier):
    context = AttackContext(backbone, classifier, EvalSettings(steps=2), [row("a star")], ("star",))
    assert run_attack("module-removal", context).asr is None
