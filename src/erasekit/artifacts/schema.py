"""The manifest's schema language (artifacts/manifest.py): small checkers of JSON values that name the path of what
they refuse ("metrics.stages[0].seconds"), so a damaged manifest is a one-line error. Plug-ins (artifacts/plugins.py)
describe their own manifest entries with them."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

MAX_SIZE = 2**31 - 1  # the largest dimension or count a manifest may give


class SchemaError(ValueError):
    """A manifest value the schema refuses. ``where`` is its path ("metrics.stages[0].seconds"); ``malformed``: a
    rule across the fields of ``where`` failed, rather than one value's form."""

    def __init__(self, where: str, problem: str, malformed: bool = False) -> None:
        super().__init__(f"{where}: {problem}")
        self.where, self.problem, self.malformed = where, problem, malformed

    def describe(self) -> str:
        if self.malformed:
            return f"malformed {self.where or 'manifest'} ({self.problem})"
        return f"manifest field {self.where!r} {self.problem}" if self.where else f"manifest {self.problem}"


def shown(key: str) -> str:
    text = repr(key)
    return text if len(text) <= 120 else text[:117] + "..."


def _is_text(value: str) -> bool:
    """Whether ``value`` is valid Unicode (JSON's "\\ud800" escapes can make lone surrogates, which no file holds)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_key(key: str, where: str) -> None:
    if not _is_text(key):
        raise SchemaError(where, f"has key {shown(key)}, which is not valid Unicode text")


def _join(where: str, key: str) -> str:
    """The path of ``key`` inside ``where``: "a.b" for a plain name, "a['odd key']" otherwise."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{where}.{key}" if where else key
    return f"{where}[{shown(key)}]"


class Schema:
    """The expected form of a JSON value: ``check(value, where)`` raises SchemaError naming the path ``where``.
    A leaf says what it wants (``what``) and whether a value is that (``accepts``)."""

    what = "a JSON value"

    def accepts(self, value: Any) -> bool:
        return True

    def check(self, value: Any, where: str) -> None:
        if not self.accepts(value):
            raise SchemaError(where, f"must be {self.what}")


@dataclass(frozen=True)
class Num(Schema):
    """A finite number (an integer if ``whole``; never a boolean) in [low, high]."""

    low: float = -math.inf
    high: float = math.inf
    whole: bool = False

    @property
    def what(self) -> str:
        kind = "an integer" if self.whole else "a finite number"
        if self.high < math.inf:
            return f"{kind} in [{self.low}, {self.high}]"
        return f"{kind} >= {self.low}" if self.low > -math.inf else kind

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.whole else int | float):
            return False
        try:
            number = float(value)  # an integer too large for a float is no finite number either
        except OverflowError:
            return False
        return math.isfinite(number) and self.low <= value <= self.high


@dataclass(frozen=True)
class Text(Schema):
    """Valid Unicode text matching ``pattern`` (whole)."""

    pattern: str = r"(?s).*"
    what: str = "a string"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and _is_text(value) and re.fullmatch(self.pattern, value) is not None

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, str) and not _is_text(value):
            raise SchemaError(where, "must be valid Unicode text")
        super().check(value, where)


class Flag(Schema):
    what = "true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class Const(Schema):
    value: Any

    @property
    def what(self) -> str:
        return repr(self.value)

    def accepts(self, value: Any) -> bool:
        return type(value) is type(self.value) and value == self.value


class Json(Schema):
    """Any JSON value: finite numbers and valid text at every depth."""

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                _check_key(key, where)
                self.check(item, _join(where, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.check(item, f"{where}[{i}]")
        elif isinstance(value, str):
            Text().check(value, where)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            Num().check(value, where)


class Scalar(Json):
    what = "a string, a number, true, false or null"

    def accepts(self, value: Any) -> bool:
        return not isinstance(value, dict | list)

    def check(self, value: Any, where: str) -> None:
        Schema.check(self, value, where)
        super().check(value, where)


@dataclass(frozen=True)
class Items(Schema):
    """A list of at least ``least`` items of one form."""

    item: Schema
    least: int = 0

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise SchemaError(where, "must be a list")
        if len(value) < self.least:
            raise SchemaError(where, f"must hold at least {self.least} item(s)")
        for i, item in enumerate(value):
            self.item.check(item, f"{where}[{i}]")


@dataclass(frozen=True)
class Mapping(Schema):
    """An object with any keys of the form ``key``, every value of the form ``value``."""

    value: Schema
    key: Text = Text()

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(where, "must be an object")
        for key, item in value.items():
            _check_key(key, where)
            if not self.key.accepts(key):
                raise SchemaError(where, f"has key {shown(key)}, not {self.key.what}")
            self.value.check(item, _join(where, key))


@dataclass(frozen=True)
class Record(Schema):
    """An object with the ``required`` fields, perhaps the ``optional`` ones, any other field of the form ``rest``
    (None: no other field), and a ``rule`` across its fields (it returns the problem, or None)."""

    required: dict[str, Schema]
    optional: dict[str, Schema] = field(default_factory=dict)
    rest: Schema | None = None
    rule: Callable[[dict], str | None] | None = None

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(where, "must be an object")
        if missing := [name for name in self.required if name not in value]:
            raise SchemaError(_join(where, missing[0]), "is missing")
        known = self.required | self.optional
        for name, item in value.items():
            _check_key(name, where)
            if name in known:
                known[name].check(item, _join(where, name))
            elif self.rest is None:
                raise SchemaError(_join(where, name), "is not a field erasekit writes")
            else:
                self.rest.check(item, _join(where, name))
        if self.rule is not None and (problem := self.rule(value)):
            raise SchemaError(where, problem, malformed=True)


@dataclass(frozen=True)
class Tagged(Schema):
    """An object whose ``tag`` field picks its form among ``variants``."""

    tag: str
    variants: dict[str, Record]

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(where, "must be an object")
        kind = value.get(self.tag)
        if not isinstance(kind, str) or kind not in self.variants:
            choices = ", ".join(map(repr, self.variants)) or "the registered ones (none is registered)"
            raise SchemaError(_join(where, self.tag), f"must be one of {choices}")
        self.variants[kind].check(value, where)


SIZE = Num(1, MAX_SIZE, whole=True)  # a dimension, or a count of at least one
COUNT = Num(0, MAX_SIZE, whole=True)
NONNEGATIVE = Num(0)
NONBLANK = Text(r"(?s).*\S.*", "a non-blank string")
SHA256 = Text(r"[0-9a-f]{64}", "a SHA-256 (64 lowercase hex digits)")
MODULE_NAME = Text(r"(?s)(?:(?!::).)+", "a module name (not empty, no '::')")
WEIGHT_NAME = Text(r"(?s)(?:(?!::).)+\.weight", "a weight name ('<module>.weight', no '::')")
TEMPLATE = Text(r"(?s)(?:(?!\{\}).)*\{\}(?:(?!\{\}).)*", "a template with exactly one '{}'")


def config_schema(config_class: type, least: dict[str, int] | None = None) -> Record:
    """The fields of a config dataclass, each optional (a missing one takes its default), by their defaults' types:
    integers at least ``least`` (0 where it names none), numbers at least 0."""
    least = least or {}

    def form(f) -> Schema:
        if type(f.default) is int:
            return Num(least.get(f.name, 0), MAX_SIZE, whole=True)
        return {float: NONNEGATIVE, bool: Flag(), str: Text()}[type(f.default)]

    return Record({}, {f.name: form(f) for f in fields(config_class)})
