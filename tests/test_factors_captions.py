import numpy as np
import pytest

from erasekit.world.captions import CAPTION_KINDS, make_caption, random_caption, short_caption
from erasekit.world.factors import (
    IMPLICIT_SKULL_HELDOUT,
    IMPLICIT_SKULL_TRAIN,
    SHAPES,
    format_concept,
    parse_concept,
)


def test_concept_strings_round_trip():
    factors = parse_concept("shape=star; colour=red;pattern=striped")
    assert factors == {"shape": "star", "colour": "red", "pattern": "striped"}
    assert format_concept(factors) == "shape=star;colour=red;pattern=striped"


@pytest.mark.parametrize("bad", ["", "shape", "shape=blob", "hue=red", "shape=star;colour=plaid"])
def test_bad_concepts_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_concept(bad)


def test_short_caption_names_the_triple():
    assert short_caption("star", "red", "striped") == "a red striped star"
    assert short_caption("ellipse", "orange", "outlined") == "an orange outlined ellipse"


def test_captions_name_their_factors_and_no_other():
    rng = np.random.default_rng(0)
    for _ in range(300):
        cap = random_caption(rng)
        assert cap.kind in CAPTION_KINDS
        if cap.kind == "implicit":
            assert cap.factors["shape"] == "skull"
            assert "skull" not in cap.text
        elif "shape" in cap.factors:
            assert any(p in cap.text for p in SHAPES[cap.factors["shape"]])


def test_heldout_implicit_prompts_never_appear_in_training_phrasings():
    assert not set(IMPLICIT_SKULL_HELDOUT) & set(IMPLICIT_SKULL_TRAIN)
    rng = np.random.default_rng(1)
    texts = {random_caption(rng).text for _ in range(3000)}
    assert not any(h in t for h in IMPLICIT_SKULL_HELDOUT for t in texts)


def test_implicit_caption_requires_the_skull():
    with pytest.raises(ValueError):
        make_caption(np.random.default_rng(0), {"shape": "star"}, "implicit")
