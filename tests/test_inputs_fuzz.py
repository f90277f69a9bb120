"""Property tests of the readers of users' files: whatever the bytes, a result that keeps its promises or one
UserError line, never another exception; and every well-formed prompt file is read back exactly as written."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erasekit.errors import UserError
from erasekit.eval.prompts import LARGEST, REQUIRED_COLUMNS, ROLES, PromptRow, load_prompts, write_prompts
from erasekit.utils.inputs import MAX_FIELD_CHARS, invisible_character, read_lines
from erasekit.world.factors import VOCAB

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- generated prompt CSV files ---------------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(-5, 20),
    st.sampled_from([LARGEST, LARGEST + 1, 2**64 - 1, 2**64, -(2**63), -1]),
    st.integers(-(2**70), 2**70),
).map(str)
ODD_NUMBERS = st.sampled_from(["", " ", "1.0", "1e3", "1_000", "0x1f", "١٢", "+3", "-0", " 7 ", "٣", "9" * 30])
VALID_CONCEPTS = st.builds(
    lambda factor, i: f"{factor}={VOCAB.values(factor)[i % len(VOCAB.values(factor))]}",
    st.sampled_from(["shape", "colour"]),
    st.integers(0, 99),
)
ODD_CONCEPTS = st.sampled_from(["", "shape=blob", "size=big", "star", "shape=star;colour=red", ";", "="])
CONCEPTS = st.one_of(VALID_CONCEPTS, ODD_CONCEPTS)
ODD_TEXT = st.text(
    st.one_of(
        st.sampled_from(list(',"\n\r\t \x00\x0b\x0c\x1b\x7f\x85\u2028\u2029\ufeff\u200b')),
        st.characters(codec="utf-8"),
    ),
    max_size=12,
)
VISIBLE = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="\ufeff\u200b")
CLEAN_TEXT = st.text(VISIBLE, min_size=1, max_size=30).map(str.strip).filter(bool)
FIELDS = st.one_of(ODD_TEXT, NUMBERS, ODD_NUMBERS, CONCEPTS, st.sampled_from([*ROLES, "Target", "erase", "all"]))
GOOD_HEADERS = st.one_of(st.permutations([*REQUIRED_COLUMNS, "group"]), st.permutations(REQUIRED_COLUMNS)).map(list)
HEADERS = st.one_of(
    GOOD_HEADERS,
    GOOD_HEADERS,
    GOOD_HEADERS,
    st.lists(st.sampled_from([*REQUIRED_COLUMNS, "group", "evaluation_guidance", "", " prompt", "Prompt"]), max_size=8),
    st.lists(ODD_TEXT, max_size=4),
)


VALID = {
    "prompt": st.one_of(st.sampled_from(["a red star", "a ring, drawn neatly", 'a "quoted" heart']), CLEAN_TEXT),
    "evaluation_seed": st.one_of(st.integers(0, 30), st.integers(0, LARGEST)).map(str),
    "case_number": st.integers(0, 20).map(str),  # repeats now and then
    "concept": VALID_CONCEPTS,
    "role": st.sampled_from(ROLES),
}
ODD = {
    "prompt": ODD_TEXT,
    "evaluation_seed": st.one_of(NUMBERS, ODD_NUMBERS),
    "case_number": st.one_of(NUMBERS, ODD_NUMBERS),
    "concept": ODD_CONCEPTS,
    "role": FIELDS,
}


@st.composite
def csv_rows(draw, header: list[str]) -> list[str]:
    """Mostly rows whose fields suit their columns (so many files parse); now and then odd fields or counts."""
    kind = draw(st.sampled_from(["valid", "valid", "valid", "valid", "mixed", "any"]))
    if kind == "any":
        return draw(st.lists(FIELDS, max_size=len(header) + 2))
    pick = {
        "valid": lambda c: VALID.get(c, CLEAN_TEXT),
        "mixed": lambda c: st.one_of(VALID.get(c, FIELDS), ODD.get(c, FIELDS)),
    }
    return [draw(pick[kind](column)) for column in header]


@st.composite
def csv_files(draw) -> bytes:
    header = draw(HEADERS)
    rows = [header, *draw(st.lists(csv_rows(header), min_size=1, max_size=6))]
    text = _join(rows, draw(st.sampled_from(["minimal", "all", "raw"])), draw(st.sampled_from(["\n", "\r\n"])))
    damage = draw(st.sampled_from(["none", "none", "none", "none", "text", "bytes"]))
    if damage == "text":  # a record cut short or a stray character, as from a truncated download or a bad edit
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", '"', "\n\n", ",", "\x00", "\ufeff"])) + text[cut:]
    data = text.encode()
    if damage == "bytes":
        data = (
            draw(st.sampled_from([b"\xff\xfe", b"\xef\xbb\xbf\xef\xbb\xbf", b"\xe9"]))
            + data
            + draw(st.sampled_from([b"", b"\xff"]))
        )
    return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + data


def _join(rows: list[list[str]], quoting: str, ending: str) -> str:
    if quoting == "raw":  # commas between fields, no quoting at all
        return "".join(",".join(row) + ending for row in rows)
    out = io.StringIO()
    mode = {"minimal": csv.QUOTE_MINIMAL, "all": csv.QUOTE_ALL}[quoting]
    writer = csv.writer(out, quoting=mode, lineterminator=ending)
    writer.writerows(rows)
    return out.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=csv_files(), require_concepts=st.booleans())
def test_a_prompt_file_parses_or_is_one_user_error(folder, data, require_concepts):
    path = folder / "p.csv"
    path.write_bytes(data)
    try:
        rows = load_prompts(path, require_concepts=require_concepts)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert rows
    assert len({r.case_number for r in rows}) == len(rows)
    for row in rows:
        assert 0 <= row.evaluation_seed <= LARGEST and 0 <= row.case_number <= LARGEST
        assert row.role in ROLES and row.prompt == row.prompt.strip() != ""
        for text in (row.prompt, row.concept, row.group):
            assert invisible_character(text) is None and "\n" not in text and len(text) <= MAX_FIELD_CHARS


@st.composite
def prompt_rows(draw) -> list[PromptRow]:
    cases = draw(st.lists(st.integers(0, LARGEST), min_size=1, max_size=8, unique=True))
    return [
        PromptRow(
            prompt=draw(CLEAN_TEXT),
            evaluation_seed=draw(st.integers(0, LARGEST)),
            case_number=case,
            concept=draw(st.one_of(st.just(""), CLEAN_TEXT)),
            role=draw(st.sampled_from(ROLES)),
            group=draw(st.one_of(st.just("all"), CLEAN_TEXT)),
        )
        for case in cases
    ]


@FUZZ
@given(rows=prompt_rows())
def test_every_well_formed_prompt_file_reads_back_as_written(folder, rows):
    write_prompts(folder / "w.csv", rows)
    assert load_prompts(folder / "w.csv", require_concepts=False) == rows


# --- generated lists of names ------------------------------------------------------------------------------------

LINES_TEXT = st.one_of(
    st.binary(max_size=64),
    st.lists(st.one_of(ODD_TEXT, CLEAN_TEXT, st.just("")), max_size=6).map(lambda ls: "\n".join(ls).encode()),
    st.text(max_size=40).map(lambda t: t.encode()),
)


@FUZZ
@given(data=LINES_TEXT, blank_lines=st.sampled_from(["error", "skip"]), bom=st.booleans())
def test_a_list_file_reads_or_is_one_user_error(folder, data, blank_lines, bom):
    path = folder / "t.txt"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    try:
        lines = read_lines(path, "targets file", blank_lines=blank_lines)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert lines
    for line in lines:
        assert line == line.strip() != "" and invisible_character(line) is None and len(line) <= MAX_FIELD_CHARS


@FUZZ
@given(names=st.lists(CLEAN_TEXT, min_size=1, max_size=8))
def test_a_clean_list_reads_back_line_for_line(folder, names):
    (folder / "n.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    assert read_lines(folder / "n.txt", "targets file") == names
