"""Settings from KEY=VALUE pairs and config files (utils/options.py), typed by a config dataclass's fields."""

import json
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erasekit.errors import UserError
from erasekit.utils.options import parse_assignments, read_config_file, typed_settings


@dataclass
class Example:
    ridge: float = 0.5
    steps: int = 10
    progressive: bool = True
    chain: str = "mlp_out"
    chain_layers: int | None = None
    radius: tuple[float, ...] = (0.3, 0.8)


def test_pairs_are_split_at_the_first_equals_and_a_later_key_wins():
    assert parse_assignments(["a=1", "b=x=y", "a=2"], "--set") == {"a": "2", "b": "x=y"}
    for bad in ("a", "=1", " =1"):
        with pytest.raises(UserError, match="KEY=VALUE"):
            parse_assignments([bad], "--set")


def test_strings_become_the_fields_types():
    values = {"ridge": "0.3", "steps": "7", "progressive": "false", "chain": "attn_out", "chain_layers": "none",
              "radius": "0.1, 0.9"}  # fmt: skip
    assert typed_settings(Example, values, "m") == {
        "ridge": 0.3, "steps": 7, "progressive": False, "chain": "attn_out", "chain_layers": None, "radius": (0.1, 0.9)
    }  # fmt: skip
    assert typed_settings(Example, {"chain_layers": "3"}, "m") == {"chain_layers": 3}


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("lambda", "1", "no setting 'lambda'"),
        ("steps", "2.5", "expected int"),
        ("steps", "1e3", "expected int"),
        ("progressive", "maybe", "expected bool"),
        ("ridge", "big", "expected float"),
        ("ridge", True, "expected float"),
        ("steps", 3.0, "expected int"),
        ("chain", 3, "expected str"),
        ("radius", "a, b", "radius"),
    ],
)
def test_a_wrong_key_or_type_is_one_line_naming_it(key, value, fragment):
    with pytest.raises(UserError, match=fragment) as caught:
        typed_settings(Example, {key: value}, "method m")
    assert "\n" not in str(caught.value) and key in str(caught.value)


def test_config_files_in_json_toml_or_an_edits_manifest(tmp_path):
    (tmp_path / "c.json").write_text('{"ridge": 0.25, "progressive": false}')
    (tmp_path / "c.toml").write_text("ridge = 0.25\nprogressive = false\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"method": "uce", "config": {"ridge": 0.25}}))
    assert read_config_file(tmp_path / "c.json") == read_config_file(tmp_path / "c.toml")
    assert typed_settings(Example, read_config_file(tmp_path / "manifest.json"), "m") == {"ridge": 0.25}
    (tmp_path / "bad.toml").write_text("ridge = \n")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(UserError, match="not a valid TOML"):
        read_config_file(tmp_path / "bad.toml")
    with pytest.raises(UserError, match="table of settings"):
        read_config_file(tmp_path / "list.json")


KEYS = st.sampled_from(["ridge", "steps", "progressive", "chain", "chain_layers", "radius", "x"])
VALUES = st.one_of(st.text(max_size=12), st.integers(), st.floats(), st.booleans(), st.none())


@given(st.dictionaries(KEYS, VALUES))
def test_any_settings_are_typed_or_refused_in_one_line(values):
    try:
        typed = typed_settings(Example, values, "m")
    except UserError as error:
        assert "\n" not in str(error)
    else:
        Example(**typed)  # the typed values build the config
