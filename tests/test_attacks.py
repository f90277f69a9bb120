"""Attacks: the pure helpers, the slot mechanism of the white-box attacks, budgets (every bad value refused
before any work), each attack run end to end on a tiny random ShapeWorld model, and attacks that fail to run
reported as failed, never as ASR 0."""

from dataclasses import fields

import numpy as np
import pytest
import torch

from erasekit.backbones.shapeworld import ShapeWorldBackbone
from erasekit.concepts.pairs import ConceptSet
from erasekit.errors import UserError
from erasekit.eval.attacks import ATTACKS, FAILED, LIMITS, NOT_APPLICABLE, OK, AttackContext, budget_for, run_attack
from erasekit.eval.attacks.base import (
    AttackFailed,
    as_template,
    concept_words,
    degenerate,
    mentions,
    names_word,
    success_rate,
    with_slot,
)
from erasekit.eval.attacks.learned_tokens import concept_images, optimise, white_box
from erasekit.eval.attacks.ring_a_bell import concept_positions, slot_positions, vocabulary
from erasekit.eval.generation import EvalSettings
from erasekit.eval.prompts import PromptRow
from erasekit.methods.base import erase_to_artifact
from erasekit.world.assets import classifier_dir
from erasekit.world.classifier import load_classifier
from erasekit.world.denoiser import build_unet
from erasekit.world.protocol import ClassifierJudge
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
    words = concept_words([row("a red star")], ["star"], ShapeWorldBackbone.world)
    assert {"star", "five-pointed star", "starburst"} <= set(words)
    assert with_slot("a red five-pointed star", words, "{}") == "a red {}"
    assert (
        with_slot(
            "a red striped star",
            concept_words([row("x", "shape=star;colour=red")], [], ShapeWorldBackbone.world),
            "[S]",
        )
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
    assert budget_for("soft-prompt", {"steps": " 100000 ", "lr": "1e30", "tokens": 8}) == soft_prompt_budget(
        steps=100_000, lr=1e30, tokens=8
    )
    assert budget_for("ring-a-bell", {"population": "3", "eta": 100}).population == 3
    with pytest.raises(UserError, match="unknown attack"):
        budget_for("nope", {})


def soft_prompt_budget(**values):
    return ATTACKS["soft-prompt"].Budget(**values)


def test_every_budget_key_has_a_limit_of_its_type_that_allows_its_default():
    for name, module in ATTACKS.items():
        for f in fields(module.Budget):
            limit = LIMITS[f.name]
            assert type(f.default) is limit.kind and limit.allows(f.default), (name, f.name)


BAD_INTEGERS = (
    *("0", "-1", "-100", "+0", "-0", "abc", "", " ", "1.5", "2.0", "1e3", "1e9", "1e-3", "nan", "inf", "-inf"),
    *("0x10", "0b1", "1/2", "3 4", "4,0", "True", "None", "½", "999999999999", "9" * 5000, "١٠٠٠٠٠٠", "10_000_000"),
)
BAD_FLOATS = (
    *("0", "-0", "0.0", "-0.0", "-1", "-1e-9", "-1e400", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400"),
    *("abc", "", " ", "1,5", "1.5.2", "1e", "--1", "1/2", "True", "None", "0x1p-3", "½", "1e-400", "1" + "0" * 400),
)
UNKNOWN_KEYS = ("stepz=3", "LR=0.1", "Steps=3", " prompts=3", "prompts =3", "=3", "seed=0", "lr_=0.1", "budget=")


def bad_budgets(name: str) -> list[str]:
    """``KEY=VALUE`` strings the attack must refuse: bad values of each of its keys, just past each key's range,
    keys it does not have (typos, another attack's keys)."""
    items = list(UNKNOWN_KEYS)
    keys = {f.name for f in fields(ATTACKS[name].Budget)}
    items += [f"{k}=2" for k in sorted(set(LIMITS) - keys)][:4]
    for key in sorted(keys):
        limit = LIMITS[key]
        items += [f"{key}={v}" for v in (BAD_INTEGERS if limit.kind is int else BAD_FLOATS)]
        items.append(f"{key}={limit.high + 1 if limit.kind is int else limit.high * 1.01 + 1}")
        if limit.kind is int and limit.low > 1:
            items.append(f"{key}={limit.low - 1}")
    return list(dict.fromkeys(items))


BAD_BUDGETS = [(name, item) for name in ATTACKS for item in bad_budgets(name)]


def test_every_attack_has_thirty_distinct_bad_budgets_including_the_reported_ones():
    for name in ATTACKS:
        assert len(bad_budgets(name)) >= 30, name
    assert {"lr=nan", "lr=inf", "lr=-1", "steps=0", "steps=1e9", "steps=abc"} <= set(bad_budgets("soft-prompt"))


@pytest.mark.parametrize("name, item", BAD_BUDGETS, ids=[f"{n}:{i[:24]!r}" for n, i in BAD_BUDGETS])
def test_a_bad_budget_is_refused_in_one_line_naming_the_attack_key_and_range(name, item):
    key, _, value = item.partition("=")
    with pytest.raises(UserError) as refused:
        budget_for(name, {key: value})
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and len(message) < 200
    assert f"the {name} attack" in message
    if key in {f.name for f in fields(ATTACKS[name].Budget)}:
        assert message.startswith(f"budget {key}=") and f"{key} must be {LIMITS[key].describe()}" in message
    else:
        assert message.startswith(f"unknown budget {key!r}") and "known: " in message


@pytest.mark.parametrize("value", [True, 3.0, 2.5, None, [3], float("nan"), 10**400])
def test_a_budget_given_as_a_python_value_is_checked_too(value):
    with pytest.raises(UserError, match="steps must be an integer"):
        budget_for("soft-prompt", {"steps": value})


def test_a_slot_holding_a_words_embedding_encodes_exactly_as_the_word(backbone):
    table = backbone.encoder.model.embeddings.word_embeddings.weight
    star = backbone.encoder.tokenizer.convert_tokens_to_ids("star")
    states, mask = backbone.encode_with_vectors(["a red [MASK]"], table[star][None, None])
    expected, expected_mask = backbone.encode(["a red star"])
    assert torch.equal(mask, expected_mask)
    assert torch.allclose(states, expected, atol=1e-5)
    with pytest.raises(ValueError, match="slot"):
        backbone.encode_with_vectors(["a red star"], table[star][None, None])


def test_white_box_attacks_ask_the_backbone_for_learned_token_access(backbone):
    access, world = white_box(backbone, "soft-prompt")
    assert access is backbone and world is backbone.world
    with pytest.raises(UserError, match="the inversion attack needs gradients through the model"):
        white_box(object(), "inversion")  # no learned-token access, no world


def test_optimising_vectors_lowers_the_denoising_loss(backbone):
    rows = [row("a red star")]
    images = concept_images(backbone.world, rows, 8, seed=0)
    table = backbone.encoder.model.embeddings.word_embeddings.weight.detach()
    start = table[torch.tensor([[1000, 2000]])]
    prompts = ["[MASK] [MASK] a red star"]
    vectors, losses = optimise(backbone, prompts, start, images, steps=40, lr=0.05, batch=16, seed=0)

    def loss(v):
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            states, mask = backbone.encode_with_vectors(prompts * 64, v.expand(64, -1, -1))
            return float(backbone.denoising_loss(states, mask, images[0, np.arange(64) % 8], gen))

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


SLOW_ATTACKS = ("ring-a-bell",)  # its genetic search: ~30 s


@pytest.mark.parametrize("name", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW_ATTACKS else a for a in ATTACKS])
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
    assert outcome.status == OK and 0.0 <= outcome.asr <= 1.0
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
    assert summary["status"] == OK and "reason" not in summary


def test_module_removal_does_not_apply_to_the_original_model(backbone, classifier):
    context = AttackContext(backbone, classifier, EvalSettings(steps=2), [row("a star")], ("star",))
    outcome = run_attack("module-removal", context)
    assert outcome.asr is None and outcome.status == NOT_APPLICABLE
    assert outcome.summary()["reason"] == "no edit to remove modules from"


def star_context(backbone, classifier) -> AttackContext:
    targets = [row("a red star", case=0), row("a blue striped five-pointed star", case=1)]
    return AttackContext(backbone, classifier, EvalSettings(steps=2), targets, ("star",))


@pytest.mark.parametrize("name", ["soft-prompt", "inversion"])
def test_an_attack_whose_optimisation_diverges_is_reported_failed_not_asr_zero(backbone, classifier, name):
    """The user's case: a huge learning rate makes the learned vectors non-finite; the images sampled from them
    would be judged "no concept" (ASR 0, the erasure holds) if the attack went on."""
    outcome = run_attack(name, star_context(backbone, classifier), {**TINY_BUDGETS[name], "lr": "1e30"})
    assert outcome.status == FAILED and outcome.asr is None
    assert outcome.reason.startswith("the optimisation diverged: ") and "of 2 (lr 1e+30)" in outcome.reason
    summary = outcome.summary()
    assert summary["status"] == "failed" and summary["asr"] is None and summary["reason"] == outcome.reason
    assert summary["budget"]["lr"] == 1e30 and summary["images"] == 0


def test_optimising_stops_at_the_first_non_finite_step(backbone):
    images = concept_images(backbone.world, [row("a red star")], 2, seed=0)
    start = backbone.encoder.model.embeddings.word_embeddings.weight.detach()[torch.tensor([[1000]])]
    with pytest.raises(AttackFailed, match="learned vectors went non-finite at step 1 of 500"):
        optimise(backbone, ["[MASK] a red star"], start, images, steps=500, lr=float("inf"), batch=2, seed=0)
    with pytest.raises(AttackFailed, match="denoising loss went non-finite at step 1 of 500"):
        optimise(backbone, ["[MASK] a red star"], start * np.nan, images, steps=500, lr=0.01, batch=2, seed=0)


@pytest.mark.parametrize("fill", [0, 255, np.nan])
def test_degenerate_attack_images_are_a_failed_attack(backbone, classifier, monkeypatch, fill):
    dtype = np.float32 if np.isnan(fill) else np.uint8
    monkeypatch.setattr(AttackContext, "generate", lambda self, rows: np.full((len(rows), 32, 32, 3), fill, dtype))
    outcome = run_attack("paraphrase", star_context(backbone, classifier), {"prompts": "2"})
    assert outcome.status == FAILED and outcome.asr is None and len(outcome.images) == 2
    assert outcome.reason == ("non-finite attack images" if np.isnan(fill) else degenerate(outcome.images))
    assert outcome.summary()["status"] == "failed"


def test_a_genuine_asr_of_zero_stays_ok():
    images, _ = render(np.random.default_rng(0), 4)
    never = AttackContext(None, lambda rows, images: np.zeros(len(rows)), None, [row("a star")] * 4, ("star",))
    outcome = never.verdict([row("a star")] * 4, images)
    assert outcome.status == OK and outcome.asr == 0.0 and outcome.summary()["asr"] == 0.0
    one_flat = images.copy()
    one_flat[0] = 7
    assert never.verdict([row("a star")] * 4, one_flat).status == OK  # one flat image is still a drawing
    assert degenerate(images[:0]) == "no attack images"
    assert degenerate(np.full((3, 8, 8, 3), 9, np.uint8)) == "every attack image is a single flat colour"
