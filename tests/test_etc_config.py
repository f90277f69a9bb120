"""ETC's settings (methods/etc/config.py): every field says which stage reads it, and a stage's work folder is keyed
by exactly the fields its results depend on (tests/test_etc_method.py checks what the token stage really reads)."""

from __future__ import annotations

from dataclasses import Field, fields

import pytest

from erasekit.concepts.pairs import ConceptSet
from erasekit.errors import UserError
from erasekit.methods.etc.config import (
    ERASE,
    NIR,
    STAGES,
    TOKEN_FIELDS,
    TOKENS,
    ETCConfig,
    check_concepts,
    fields_read_by,
    read_by,
    stage_key,
)

CONCEPTS = ConceptSet.build(["cat", "dog"], "", ["cow", "pig", "owl"])
CHOICES = {"eraser": "moe", "rule": "radius", "prompt_states": "both", "tokens": "last", "layer_weighting": "uniform"}
EXAMPLES = tuple(f"a prompt {i}" for i in range(4))


def another_value(config_field: Field):
    """A valid value of the field other than its default."""
    default = config_field.default
    special = {"templates": ("a {}",), "target_prompts": EXAMPLES, "off_plane_radius": (0.1, 0.2), "work_dir": "/w"}
    if config_field.name in special | CHOICES:
        return (special | CHOICES)[config_field.name]
    if isinstance(default, bool):
        return not default
    if default is None:  # nir_seed
        return 7
    if isinstance(default, int):
        return default + 1
    return default / 2 if default else 0.5


def keys(**settings) -> dict[str, str]:
    config = ETCConfig(**settings)
    return {stage: stage_key(CONCEPTS, config, stage) for stage in (TOKENS, ERASE)}


def test_every_field_says_which_stage_reads_it():
    assert {f.name: f.metadata.get("stage") for f in fields(ETCConfig) if f.metadata.get("stage") not in STAGES} == {}
    assert sum(len(fields_read_by(stage)) for stage in STAGES) == len(fields(ETCConfig))
    with pytest.raises(ValueError, match="unknown ETC stage"):
        read_by("training", 0)


@pytest.mark.parametrize("config_field", fields(ETCConfig), ids=lambda f: f.name)
def test_a_stage_key_changes_with_every_field_the_stage_depends_on_and_only_with_those(config_field: Field):
    # a field that enters the token key only under a condition (prompt_states: concepts given by example prompts)
    condition = config_field.metadata["keyed_if"]
    base = {condition: another_value(next(f for f in fields(ETCConfig) if f.name == condition))} if condition else {}
    before, after = keys(**base), keys(**base, **{config_field.name: another_value(config_field)})
    stage = config_field.metadata["stage"]
    assert (before[TOKENS] != after[TOKENS]) == (stage == TOKENS)
    assert (before[ERASE] != after[ERASE]) == (stage in (TOKENS, ERASE))  # NIR and the work folder: neither


def test_the_token_fields_are_the_token_stage_fields():
    assert TOKEN_FIELDS == fields_read_by(TOKENS) and {"contexts", "seed", "keys_per_distribution"} <= set(TOKEN_FIELDS)
    assert set(fields_read_by(NIR)) == {"nir", "nir_rho", "nir_seed"}
    with pytest.raises(ValueError, match="no work folder"):
        stage_key(CONCEPTS, ETCConfig(), NIR)


def test_keys_per_distribution_is_checked_against_the_fitted_contexts_for_the_keyed_eraser_only():
    few = dict(contexts=10, holdout=0.2, keys_per_distribution=32)  # 8 fitted contexts
    check_concepts(CONCEPTS, ETCConfig(**few, eraser="moe"))
    with pytest.raises(UserError, match=r"keys_per_distribution must be at most the fitted contexts \(8\)"):
        check_concepts(CONCEPTS, ETCConfig(**few))
