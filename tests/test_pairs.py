"""Concept sets, prompt pairs and token alignment (specs/erasepro.md section 4), without a model."""

import time

import pytest

from erasekit.backbones.base import TokenSegment
from erasekit.concepts.pairs import (
    ConceptSet,
    align_segments,
    align_tokens,
    casing_duplicates,
    fill,
    first_duplicate,
    token_positions,
)
from erasekit.errors import UserError

BOS, EOS = 100, 101


def test_bidirectional_alignment_maps_every_position():
    # "a red star" -> "a red shape": same length spans map one to one
    t, a = [BOS, 1, 2, 3, EOS], [BOS, 1, 2, 9, EOS]
    assert align_tokens(t, a, causal=False, pad_attended=False, length=8) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]


def test_causal_alignment_skips_the_identical_prefix():
    t, a = [BOS, 1, 2, 3, EOS], [BOS, 1, 2, 9, EOS]
    assert align_tokens(t, a, causal=True, pad_attended=False, length=8) == [(3, 3), (4, 4)]


def test_longer_concept_maps_to_the_anchors_last_token_and_shifts_the_suffix():
    # target concept has 3 tokens, anchor 1; the suffix (7, EOS) maps with the offset; padding follows
    t, a = [BOS, 1, 3, 4, 5, 7, EOS], [BOS, 1, 9, 7, EOS]
    pairs = align_tokens(t, a, causal=True, pad_attended=True, length=9)
    assert pairs == [(2, 2), (3, 2), (4, 2), (5, 3), (6, 4), (7, 5), (8, 6)]


def test_empty_anchor_maps_the_concept_to_the_anchors_end_token():
    # "a skull" -> "": the concept tokens map to the anchor's end-of-text, whatever the template before it
    t, a = [BOS, 1, 3, EOS], [BOS, EOS]
    assert align_tokens(t, a, causal=True, pad_attended=False, length=6) == [(1, 1), (2, 1), (3, 1)]
    # "a skull on grass" -> "a on grass" (bidirectional): the suffix keeps its counterparts
    t, a = [BOS, 1, 3, 7, 8, EOS], [BOS, 1, 7, 8, EOS]
    pairs = align_tokens(t, a, causal=False, pad_attended=False, length=6)
    assert pairs == [(0, 0), (1, 1), (2, 4), (3, 2), (4, 3), (5, 4)]


def test_padding_of_a_shorter_target_is_clipped_to_the_sequence():
    t, a = [BOS, 3, EOS], [BOS, 4, 5, 6, EOS]
    pairs = align_tokens(t, a, causal=True, pad_attended=True, length=6)
    assert pairs[-3:] == [(3, 5), (4, 5), (5, 5)]  # anchor padding would run past the end


def test_segments_offset_and_prompt_index():
    seg_t = TokenSegment(0, 6, [[BOS, 3, EOS], [BOS, 1, 3, EOS]], False, False, ("text_encoder",))
    seg_a = TokenSegment(0, 6, [[BOS, 4, EOS], [BOS, 1, 4, EOS]], False, False, ("text_encoder",))
    (alignment,) = align_segments([seg_t], [seg_a])
    assert alignment.prompt.tolist() == [0, 0, 0, 1, 1, 1, 1]
    (positions,) = token_positions([seg_t])
    assert len(positions) == 7  # real tokens only: padding is masked for this segment


def test_pairs_swap_the_phrase_under_every_template():
    concepts = ConceptSet.build(["star", "heart"], "shape", ["circle"], templates=["a {}", "a red {} on grass"])
    targets, anchors = concepts.pairs()
    assert targets == ["a star", "a red star on grass", "a heart", "a red heart on grass"]
    assert anchors == ["a shape", "a red shape on grass"] * 2
    assert concepts.preserve_prompts() == ["a circle", "a red circle on grass", ""]


def test_empty_anchor_leaves_clean_prompts():
    assert fill("a {} on grass", "") == "a on grass"
    assert fill("a {}", "apple") == "an apple"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": []}, "no target"),
        ({"targets": ["star", " "]}, "empty"),
        ({"targets": ["star", "star"]}, "duplicate"),
        ({"targets": ["star"], "anchor": "Star"}, "equals its anchor"),
        ({"targets": ["star"], "preserve": ["star"]}, "both a target"),
        ({"targets": ["star"], "kind": "colour"}, "unknown concept kind"),
        ({"targets": ["star"], "templates": ["no slot"]}, "exactly one"),
        ({"targets": ["star", "heart"], "anchor": ["a", "b", "c"]}, "3 anchors for 2 targets"),
    ],
)
def test_bad_concept_sets_are_refused(kwargs, message):
    with pytest.raises(UserError, match=message):
        ConceptSet.build(**kwargs)


def test_a_duplicate_names_both_entries():
    with pytest.raises(UserError, match=r"duplicate target concept: 'star' \(entries 2 and 4\)"):
        ConceptSet.build(["heart", "star", "ring", "star", "heart"])


def test_a_hundred_thousand_targets_are_checked_in_well_under_a_second():
    names = [f"concept {i}" for i in range(100_000)]
    start = time.perf_counter()
    concepts = ConceptSet.build(names, "", [f"kept {i}" for i in range(1_000)])
    assert time.perf_counter() - start < 1.0 and len(concepts.targets) == 100_000
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"\(entries 1 and 100001\)"):
        ConceptSet.build([*names, "concept 0"])
    assert first_duplicate(names) is None and time.perf_counter() - start < 1.0


class CasedBackbone:
    """token_segments like a cased (lower=False) or uncased (lower=True) tokenizer, one id per character."""

    def __init__(self, lower: bool):
        self.lower = lower

    def token_segments(self, prompts: list[str]) -> list[TokenSegment]:
        ids = [[BOS, *map(ord, p.lower() if self.lower else p), EOS] for p in prompts]
        return [TokenSegment(0, 16, ids, True, True, ("text_encoder",))]


def test_casing_duplicates_are_pairs_the_encoder_cannot_tell_apart():
    names = ["Star", "heart", "star", "STAR", "ſtar", "ring", "Heart"]
    pairs = [("Star", "star"), ("Star", "STAR"), ("Star", "ſtar"), ("heart", "Heart")]
    assert casing_duplicates(names) == pairs
    uncased = [("Star", "star"), ("Star", "STAR"), ("heart", "Heart")]  # "ſ" is not "s" to a lower-casing tokenizer
    assert casing_duplicates(names, CasedBackbone(lower=True)) == uncased
    assert casing_duplicates(names, CasedBackbone(lower=False)) == []
    assert casing_duplicates(["star", "star"]) == []  # an exact duplicate is an error, not a warning


def test_casing_duplicates_are_found_in_linear_time():
    names = [f"Concept {i}" for i in range(100_000)] + ["concept 5"]
    start = time.perf_counter()
    assert casing_duplicates(names, CasedBackbone(lower=True)) == [("Concept 5", "concept 5")]
    assert time.perf_counter() - start < 1.0
