"""Numeric settings (utils/validation.py): every config refuses a non-finite or out-of-range number in one line,
so the Python API is protected as well as the CLI."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erasekit.errors import UserError
from erasekit.eval.generation import EvalSettings
from erasekit.methods.erasepro import EraseProConfig
from erasekit.methods.etc.method import ETCConfig
from erasekit.methods.etc.moeraser import MoEraserConfig
from erasekit.methods.uce import UCEConfig
from erasekit.utils.validation import FRACTION, Range

BAD = {
    UCEConfig: {"ridge": [0.0, -1.0, math.inf, math.nan], "s_e": [0.0, math.inf], "s_p": [-0.1, math.nan]},
    EraseProConfig: {"ridge": [math.inf, 0.0], "s_p": [math.inf], "rtol": [0.0, 1.0], "chain_layers": [0]},
    ETCConfig: {
        "coverage": [0.0, 1.5, math.nan],
        "residual": [-0.1, 1.1],
        "tail": [1.0],
        "gamma": [-1.0, math.inf],
        "lr": [0.0, math.inf],
        "steps": [0, 10**9],
        "holdout": [0.0, 1.0],
        "off_plane_radius": [(0.3, math.inf), (-1.0, 0.5)],
        "seed": [-1, 2**64],
        "nir_rho": [math.nan],
    },
    MoEraserConfig: {"experts": [0], "router_noise": [-1.0, math.inf]},
    EvalSettings: {"guidance": [math.nan, math.inf, -1.0], "steps": [0, 1001], "num_images": [0]},
}
CASES = [(cls, name, value) for cls, fields in BAD.items() for name, values in fields.items() for value in values]


@pytest.mark.parametrize(("config_class", "field", "value"), CASES, ids=lambda v: getattr(v, "__name__", repr(v)))
def test_a_config_refuses_a_bad_number_in_one_line(config_class, field, value):
    with pytest.raises(UserError, match=field) as caught:
        config_class(**{field: value})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("config_class", list(BAD))
def test_the_defaults_are_valid(config_class):
    config_class()


def test_a_range_says_which_ends_it_includes():
    assert str(FRACTION) == "(0, 1)" and str(Range(1, 5)) == "[1, 5]"
    assert FRACTION.holds(0.5) and not FRACTION.holds(0.0) and not FRACTION.holds(1.0)
    assert Range(0, 1).holds(0.0) and Range(0, 1).holds(1.0)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_float_for_the_guidance_either_builds_settings_or_is_refused(guidance):
    try:
        settings = EvalSettings(guidance=guidance)
    except UserError:
        assert not (math.isfinite(guidance) and 0 <= guidance <= 100)
    else:
        assert math.isfinite(settings.guidance) and 0 <= settings.guidance <= 100
