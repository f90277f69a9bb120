"""Property tests of attack budgets: for any ``KEY=VALUE`` string, ``budget_for`` returns a budget whose every
value lies in its key's range, or refuses it with a one-line UserError; never another error."""

import math
from dataclasses import asdict, fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erasekit.errors import UserError
from erasekit.eval.attacks import ATTACKS, LIMITS, budget_for

KEYS = st.sampled_from(sorted(LIMITS)) | st.text(max_size=12)
NUMBERS = (
    st.integers(-(10**12), 10**12) | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**400), 10**400)
)
VALUES = (
    NUMBERS.map(str)
    | NUMBERS.map(lambda n: f"{n:e}" if isinstance(n, float) else f"{n:_}")
    | st.sampled_from(["nan", "-inf", "Infinity", "1e400", "0x10", "", " 7 ", "3.0", "1,5", "½", "٣"])
    | st.text(max_size=20)
    | st.text(alphabet="0123456789.eE+-_ naif", max_size=12)
)
ITEMS = st.tuples(KEYS, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}")


def within_limits(budget) -> bool:
    for key, value in asdict(budget).items():
        limit = LIMITS[key]
        if type(value) is not limit.kind or not limit.allows(value):
            return False
    return True


def check(name: str, items: list[str]) -> None:
    options = dict(item.partition("=")[::2] for item in items)
    try:
        budget = budget_for(name, options)
    except UserError as refused:
        assert len(str(refused).splitlines()) == 1 and f"the {name} attack" in str(refused)
        return
    assert within_limits(budget)
    for key, value in options.items():
        assert getattr(budget, key) == LIMITS[key].kind(value)


@pytest.mark.parametrize("name", list(ATTACKS))
@settings(max_examples=300, deadline=None)
@given(items=st.lists(ITEMS, max_size=3))
def test_any_budget_string_gives_a_valid_budget_or_a_one_line_user_error(name, items):
    check(name, items)


@pytest.mark.parametrize("name", list(ATTACKS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_number_for_a_known_key_gives_a_valid_budget_or_a_one_line_user_error(name, data):
    key = data.draw(st.sampled_from([f.name for f in fields(ATTACKS[name].Budget)]))
    value = data.draw(NUMBERS | NUMBERS.map(str))
    try:
        budget = budget_for(name, {key: value})
    except UserError as refused:
        assert len(str(refused).splitlines()) == 1 and key in str(refused)
        return
    assert within_limits(budget) and math.isfinite(getattr(budget, key))
