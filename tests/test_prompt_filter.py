"""The prompt-filter baseline: whole-word replacement, carried by the artifact, dropped by module removal."""

import json
import re

import pytest
import torch

from erasekit.artifacts import apply_artifact, export_artifact, load_artifact, remove_artifact, save_artifact
from erasekit.backbones.shapeworld import ShapeWorldBackbone
from erasekit.concepts.pairs import ConceptSet, casing_duplicates
from erasekit.errors import UserError
from erasekit.methods.base import erase_to_artifact
from erasekit.methods.prompt_filter import PromptFilter, fold
from erasekit.world.denoiser import build_unet
from erasekit.world.text_encoder import shared_encoder
from tiny_shapeworld import TINY_UNET_CONFIG


@pytest.fixture(scope="module")
def backbone() -> ShapeWorldBackbone:
    torch.manual_seed(0)
    return ShapeWorldBackbone(build_unet(TINY_UNET_CONFIG), shared_encoder(), source="tiny")


def test_filter_replaces_whole_words_case_insensitively_longest_first():
    f = PromptFilter(("star", "red star"), ("shape", "thing"))
    assert f("a Red Star on blue") == "a thing on blue"
    assert f("a STAR") == "a shape"
    assert f("a starburst and a superstar") == "a starburst and a superstar"  # not whole words: passes
    assert f("star-shaped") == "shape-shaped"


def test_filter_refuses_bad_tables():
    with pytest.raises(ValueError):
        PromptFilter(("star",), ())
    with pytest.raises(ValueError):
        PromptFilter((" ",), ("x",))


def test_filter_edit_round_trips_and_changes_encoding_only_while_applied(backbone, tmp_path):
    edit = erase_to_artifact(backbone, ConceptSet.build(["star"], "shape"), "filter", {})
    save_artifact(edit, tmp_path / "edit")
    loaded = load_artifact(tmp_path / "edit")
    assert loaded.prompt_filter == {"words": ["star"], "replacements": ["shape"]}
    assert loaded.plugins == 1 and not loaded.weights
    star, _ = backbone.encode(["a red star"])
    shape, _ = backbone.encode(["a red shape"])
    applied = apply_artifact(backbone, loaded)
    filtered, _ = backbone.encode(["a red star"])
    remove_artifact(backbone, applied)
    assert torch.equal(filtered, shape) and not torch.equal(star, shape)
    assert torch.equal(backbone.encode(["a red star"])[0], star)
    removed = apply_artifact(backbone, loaded, modules=False)  # the module-removal attack drops the filter
    assert backbone.prompt_filter is None
    remove_artifact(backbone, removed)


def test_a_malformed_filter_entry_is_a_one_line_error(backbone, tmp_path):
    edit = erase_to_artifact(backbone, ConceptSet.build(["star"], "shape"), "filter", {})
    save_artifact(edit, tmp_path / "edit")
    manifest = json.loads((tmp_path / "edit" / "manifest.json").read_text())
    manifest["prompt_filter"] = {"words": ["star", "moon"], "replacements": ["shape"]}
    (tmp_path / "edit" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="malformed prompt_filter"):
        load_artifact(tmp_path / "edit")


def test_a_filter_edit_cannot_be_exported(backbone):
    edit = erase_to_artifact(backbone, ConceptSet.build(["star"], "shape"), "filter", {})
    with pytest.raises(UserError, match="prompt filter"):
        export_artifact(backbone, edit, "unused")


@pytest.mark.parametrize(
    ("prompt", "filtered"),
    [
        ("a red ſtar", "a red shape"),  # long s: casefolds to "s", and re.IGNORECASE matches it
        ("a red ſTAR", "a red shape"),
        ("a \u212aite", "a toy"),  # Kelvin sign: a capital K
        ("a pınk star", "a blue shape"),  # re.IGNORECASE equates the dotless ı with i
        ("a PİNK star", "a blue shape"),  # and the dotted capital İ
    ],
)
def test_every_spelling_the_pattern_matches_is_replaced(prompt, filtered):
    f = PromptFilter(("star", "kite", "pink"), ("shape", "toy", "blue"))
    assert f(prompt) == filtered


def test_foldings_that_change_length_are_not_applied():
    assert PromptFilter(("strasse",), ("road",))("a straße") == "a straße"
    assert PromptFilter(("straße",), ("road",))("a STRAẞE and a strasse") == "a road and a strasse"


def test_one_word_in_two_casings_needs_one_replacement():
    assert PromptFilter(("Star", "star"), ("shape", "shape"))("a STAR") == "a shape"
    with pytest.raises(UserError, match="'Star' and 'star' are one word"):
        PromptFilter(("Star", "star"), ("shape", "thing"))


def test_fold_agrees_with_the_pattern_over_all_of_unicode():
    # every character with a case mapping, against each of its case variants re.IGNORECASE matches it to
    for code in range(0x110000):
        char = chr(code)
        variants = {v for v in (char.lower(), char.upper(), char.title(), char.casefold()) if len(v) == 1} - {char}
        for variant in variants:
            if re.fullmatch(re.escape(char), variant, re.IGNORECASE):
                assert fold(char) == fold(variant), (hex(code), variant)
    for char, variant in [("ı", "i"), ("ſ", "s"), ("ς", "σ"), ("ϐ", "β"), ("ﬅ", "ﬆ"), ("ẞ", "ß"), ("\u0345", "ι")]:
        assert re.fullmatch(re.escape(char), variant, re.IGNORECASE) and fold(char) == fold(variant)


def test_targets_in_two_casings_are_one_concept_to_an_uncased_encoder(backbone):
    # MiniLM lower-cases: "Star" and "star" erase one concept twice (the CLI warns); "ſtar" tokenizes otherwise
    names = ["Star", "heart", "star", "ſtar"]
    assert casing_duplicates(names, backbone) == [("Star", "star")]
    assert casing_duplicates(names) == [("Star", "star"), ("Star", "ſtar")]
