"""Concept embedding samples (concepts/embeddings.py): the phrase's sub-tokens are found, the cache is exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from erasekit.backbones.loader import load_backbone
from erasekit.concepts.embeddings import CONTEXT_TEMPLATES, concept_embeddings, last_tokens, phrase_token_positions
from tiny_pipelines import build_sd, build_sd3_t5

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shapeworld():
    return load_backbone("shapeworld")


def test_context_templates_are_many_distinct_and_fit_the_encoder(shapeworld):
    assert len(CONTEXT_TEMPLATES) >= 100 and len(set(CONTEXT_TEMPLATES)) == len(CONTEXT_TEMPLATES)
    shapeworld.token_segments([t.format("large red checkered lightning bolt") for t in CONTEXT_TEMPLATES])


@pytest.mark.parametrize("family", ["shapeworld", "sd", "sd3_t5"])
def test_phrase_positions_hold_exactly_the_phrase_s_sub_tokens(family, shapeworld, tmp_path: Path):
    builders = {"sd": build_sd, "sd3_t5": build_sd3_t5}
    backbone = shapeworld if family == "shapeworld" else load_backbone(str(builders[family](tmp_path / family)))
    phrase = "red striped star"
    short = ["a {}", "the {} here", "one {}.", "{}"]  # the tiny CLIP tokenizer is byte-level: 32 bytes at most
    templates = list(CONTEXT_TEMPLATES[:30]) if family == "shapeworld" else short
    segment = backbone.token_segments([t.format(phrase) for t in templates])[0]
    specials = set(backbone.token_segments([""])[0].ids[0])
    phrase_ids = [i for i in backbone.token_segments([phrase])[0].ids[0] if i not in specials]
    for ids, positions in zip(segment.ids, phrase_token_positions(backbone, templates, phrase), strict=True):
        assert [ids[p - segment.offset] for p in positions] == phrase_ids


def test_embeddings_are_cached_exactly_and_keyed_by_templates(shapeworld, tmp_path: Path):
    phrases, templates = ["red star", "blue striped heart", "skull"], list(CONTEXT_TEMPLATES[:12])
    fresh = concept_embeddings(shapeworld, phrases, templates, cache=tmp_path, chunk=2, progress=False)
    assert [x.shape for x in fresh] == [(12, 2, 384), (12, 3, 384), (12, 1, 384)]
    assert len(list(tmp_path.glob("*.safetensors"))) == 3
    cached = concept_embeddings(shapeworld, phrases, templates, cache=tmp_path, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(cached, fresh, strict=True))
    alone = concept_embeddings(shapeworld, phrases[1:], templates, progress=False)  # other batch: other padding
    for a, b in zip(alone, fresh[1:], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=4e-3)
    fresh = last_tokens(fresh)
    concept_embeddings(shapeworld, phrases[:1], templates[:6], cache=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 4
    # the samples of one concept differ by context; different concepts are further apart
    within = torch.cdist(fresh[0], fresh[0]).mean()
    assert torch.cdist(fresh[0], fresh[1]).mean() > within


def test_a_template_without_one_placeholder_is_refused(shapeworld):
    with pytest.raises(ValueError, match="exactly one"):
        concept_embeddings(shapeworld, ["star"], ["a picture", "a {}"], progress=False)


def test_a_damaged_cache_entry_is_encoded_again_and_replaced(shapeworld, tmp_path: Path):
    phrases, templates = ["red star", "skull"], list(CONTEXT_TEMPLATES[:4])
    fresh = concept_embeddings(shapeworld, phrases, templates, cache=tmp_path, progress=False)
    entries = sorted(tmp_path.glob("*.safetensors"))
    entries[0].write_bytes(entries[0].read_bytes()[:40])  # an entry cut short (a disk full, a copy interrupted)
    entries[1].write_bytes(b"not a safetensors file")
    again = concept_embeddings(shapeworld, phrases, templates, cache=tmp_path, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(again, fresh, strict=True))
    cached = concept_embeddings(shapeworld, phrases, templates, cache=tmp_path, progress=False)  # entries rewritten
    assert all(torch.equal(a, b) for a, b in zip(cached, fresh, strict=True))
    assert sorted(tmp_path.glob("*.safetensors")) == entries


def test_names_the_tokenizer_cannot_spell_are_found_for_a_warning(shapeworld):
    from erasekit.concepts.pairs import unknown_token_names

    assert unknown_token_names(["red star", "☃", "striped ☃ heart", "Star"], shapeworld) == ["☃", "striped ☃ heart"]
    assert unknown_token_names([], shapeworld) == []


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_causal_encoders_embed_concepts_from_the_prefix_as_the_full_encoding_does(family, tmp_path: Path):
    from erasekit.concepts.embeddings import encode_phrases
    from tiny_pipelines import BUILDERS

    backbone = load_backbone(str(BUILDERS[family](tmp_path / family)))
    templates = ["a {}", "the {} here", "one {}.", "{}"]
    phrases = ["red star", "cat", "blue striped heart"]
    prefix = encode_phrases(backbone, phrases, templates, batch_size=5)  # batches of different prefix lengths
    backbone.encode_prefix = None  # as a backbone without the capability: encode() over every position
    full = encode_phrases(backbone, phrases, templates, batch_size=5)
    for a, b in zip(prefix, full, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-4)
