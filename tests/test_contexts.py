"""Fitting contexts (concepts/contexts.py, world/phrasings.py): sampled from the backbone's world, held out for
calibration, and never an evaluation phrasing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erasekit.concepts.contexts import (
    NARRATIVE_TEMPLATES,
    check_disjoint,
    check_templates,
    sample_contexts,
    split_contexts,
)
from erasekit.errors import UserError
from erasekit.world.factors import VOCAB
from erasekit.world.phrasings import PHRASINGS, fit_contexts, named_factors, phrase_prompt
from erasekit.world.scale import ScaleSplit, scale_rows


class World:
    def contexts(self, phrase: str, count: int, seed: int) -> list[str]:
        return fit_contexts(phrase, count, seed)


def test_narrative_templates_are_hundreds_of_distinct_one_slot_templates():
    assert len(NARRATIVE_TEMPLATES) >= 500 and len(set(NARRATIVE_TEMPLATES)) == len(NARRATIVE_TEMPLATES)
    assert all(t.count("{}") == 1 for t in NARRATIVE_TEMPLATES)
    picked = sample_contexts(object(), "a castle", 100, 0)  # a backbone without a world of its own
    assert len(set(picked)) == 100 and set(picked) <= set(NARRATIVE_TEMPLATES)
    assert picked == sample_contexts(object(), "a castle", 100, 0) != sample_contexts(object(), "a tower", 100, 0)


def test_a_world_gives_each_concept_its_own_compositional_contexts():
    star, triple = sample_contexts(World(), "star", 120, 0), sample_contexts(World(), "red striped star", 120, 0)
    assert len(set(star)) == len(set(triple)) == 120
    # a shape's contexts put colours and patterns before it; a pattern's put a shape after it
    assert any(t.split("{}")[0].rstrip().endswith(("red", "blue", "green", "dotted", "striped")) for t in star)
    assert all(
        t.split("{}")[1].split(" ")[1].rstrip(",") in {"shape", *_shape_words()}
        for t in sample_contexts(World(), "striped", 50, 0)
    )
    assert named_factors("red striped star") == {"colour": "red", "pattern": "striped", "shape": "star"}
    assert named_factors("a pirate flag") is None and sample_contexts(World(), "a pirate flag", 20, 0)


def _shape_words():
    from erasekit.world.factors import SHAPES

    return [w for phrasings in SHAPES.values() for w in phrasings[0].split()]


@settings(max_examples=60, deadline=None)
@given(
    shape=st.sampled_from(VOCAB.shape),
    colour=st.sampled_from(VOCAB.colour),
    pattern=st.sampled_from(VOCAB.pattern),
    seed=st.integers(0, 2**16),
)
def test_no_evaluation_phrasing_is_ever_a_fitting_context(shape, colour, pattern, seed):
    factors = {"shape": shape, "colour": colour, "pattern": pattern}
    rng = np.random.default_rng(seed)
    prompts = [phrase_prompt(factors, p, rng) for p in PHRASINGS for _ in range(3)]
    from erasekit.world.phrasings import caption_words

    for phrase in (" ".join(caption_words(factors)), caption_words({"shape": shape})[0]):
        fitted = {c.format(phrase) for c in fit_contexts(phrase, 120, seed)}
        assert not fitted & set(prompts)


def test_the_scale_protocol_judges_every_phrasing_and_never_a_fitted_prompt():
    split = ScaleSplit.make(200, 30, 40)
    rows = scale_rows(split, 200, eval_targets=40)
    groups = {r.group for r in rows}
    assert {f"target-{p}" for p in PHRASINGS} <= groups and {f"heldout-near-{p}" for p in PHRASINGS} & groups
    fitted = [c.format(t.phrase) for t in split.targets + split.pool for c in fit_contexts(t.phrase, 120, 0)]
    check_disjoint(fitted, [r.prompt for r in rows])  # raises on any overlap
    with pytest.raises(UserError, match="fitted on"):
        check_disjoint(fitted, [rows[0].prompt, fitted[5]])


def test_split_holds_out_a_seeded_share_and_user_templates_are_checked():
    contexts = [f"c{i} {{}}" for i in range(10)]
    fit, held = split_contexts(contexts, 0.2, 0)
    assert len(held) == 2 and sorted(fit + held) == sorted(contexts) and not set(fit) & set(held)
    assert split_contexts(contexts, 0.2, 0) == (fit, held) != split_contexts(contexts, 0.2, 1)
    assert len(split_contexts(contexts[:2], 0.9, 0)[0]) == 1  # at least one left to fit
    for bad, fragment in ((["a {} {}"], "exactly one"), (["no slot"], "exactly one"), (["a {x} {}"], "exactly one")):
        with pytest.raises(UserError, match=fragment):
            check_templates(bad)
    with pytest.raises(UserError, match="no contexts"):
        check_templates([])
