"""The ShapeWorld scale protocol (world/scale.py): the universe, a disjoint split, near/far held-out rows."""

from __future__ import annotations

import pytest

from erasekit.errors import UserError
from erasekit.world.phrasings import PHRASINGS
from erasekit.world.scale import ScaleSplit, Triple, group_kind, near, scale_rows, universe


def test_universe_has_every_triple_once():
    triples = universe()
    assert len(triples) == len(set(triples)) >= 3840


def test_split_is_disjoint_seeded_and_nested():
    split = ScaleSplit.make(2000, 300, 400, seed=0)
    sets = [set(split.targets), set(split.pool), set(split.heldout)]
    assert [len(s) for s in sets] == [2000, 300, 400]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert ScaleSplit.make(2000, 300, 400, seed=0) == split != ScaleSplit.make(2000, 300, 400, seed=1)
    with pytest.raises(UserError, match="exceed"):
        ScaleSplit.make(3500, 300, 400)


def test_near_means_one_factor_away_from_an_erased_triple():
    erased = {Triple("star", "red", "striped")}
    assert near(Triple("star", "blue", "striped"), erased)
    assert not near(Triple("heart", "blue", "striped"), erased)
    assert not near(Triple("star", "red", "striped"), erased - erased)


def test_rows_sample_erased_targets_and_keep_heldout_and_single_factor_prompts():
    split = ScaleSplit.make(2000, 300, 400, seed=0)
    rows = scale_rows(split, 2000, eval_targets=200)
    targets = [r for r in rows if r.role == "target"]
    assert len(targets) == 200 and {r.concept for r in targets} <= {t.concept for t in split.targets}
    near_rows = [r for r in rows if group_kind(r.group) == "heldout-near"]
    assert len(near_rows) > 300  # with 2,000 of 3,840 erased nearly every held-out triple is one word away
    few = {group_kind(r.group) for r in scale_rows(split, 10) if r.role == "preserve"}
    assert few == {"heldout-near", "heldout-far", "single"}
    # every kind is judged in every phrasing (single factors have no reordered form: complex instead)
    assert {r.group for r in rows if r.role == "target"} == {f"target-{p}" for p in PHRASINGS}
    assert {r.group for r in near_rows} == {f"heldout-near-{p}" for p in PHRASINGS}
    assert len(scale_rows(split, 1)) == 1 + 400 + 48 and rows[0].prompt.startswith(("a ", "an "))
    assert rows[0].group == "target-canonical" and not rows[1].prompt.startswith(("a ", "an "))  # then bare
    assert scale_rows(split, 10) == scale_rows(split, 10)
