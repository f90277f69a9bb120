"""One reader for a user's text files (utils/inputs.py): every bad file is one clear line, nothing is misread."""

from __future__ import annotations

import io
import os
import sys
import threading
from pathlib import Path

import pytest

from erasekit.errors import UserError
from erasekit.eval.prompts import load_prompts
from erasekit.utils import inputs
from erasekit.utils.inputs import read_lines, read_text

HEADER = "prompt,evaluation_seed,case_number,concept,role\n"
ROW = "a red star,1,0,shape=star,target\n"


class FakeStdin(io.TextIOWrapper):
    """Standard input carrying ``data`` (bytes, read through .buffer like the real one)."""

    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data), encoding="utf-8")


@pytest.fixture
def stdin(monkeypatch):
    def feed(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", FakeStdin(data))

    return feed


def test_a_utf8_bom_is_dropped(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"\xef\xbb\xbfstar\nheart\n")
    assert read_lines(tmp_path / "t.txt", "targets file") == ["star", "heart"]


def test_lines_end_only_at_newlines(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"star\r\nheart\rmoon\n")
    assert read_lines(tmp_path / "t.txt", "targets file") == ["star", "heart", "moon"]
    assert inputs.split_lines("a\fb\n") == ["a\fb"]  # str.splitlines would make two names of it


def test_blank_lines_error_or_skip(tmp_path):
    (tmp_path / "t.txt").write_text("a red star\n\n  \na blue heart\n")
    assert read_lines(tmp_path / "t.txt", "prompts", blank_lines="skip") == ["a red star", "a blue heart"]
    with pytest.raises(UserError, match="line 2 is blank"):
        read_lines(tmp_path / "t.txt", "targets file")
    with pytest.raises(ValueError, match="blank_lines"):
        read_lines(tmp_path / "t.txt", "targets file", blank_lines="keep")


def test_an_empty_file_names_what_it_lacks(tmp_path):
    (tmp_path / "p.txt").write_text("\n \n")
    with pytest.raises(UserError, match=r"target prompts file has no prompts \(it is empty or every line is blank\)"):
        read_lines(tmp_path / "p.txt", "target prompts file", blank_lines="skip", entries="prompts")


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
def test_standard_input(stdin, name):
    stdin(b"\xef\xbb\xbfstar\nheart\n")
    assert read_lines(Path(name), "targets file") == ["star", "heart"]


def test_standard_input_is_read_once(stdin):
    stdin(b"star\n")
    assert read_lines(Path("-"), "targets file") == ["star"]
    with pytest.raises(UserError, match="mapping pool file cannot come from standard input: the targets file"):
        read_lines(Path("-"), "mapping pool file")


def test_standard_input_errors_name_it(stdin):
    stdin(b"star\n\nheart\n")
    with pytest.raises(UserError, match="^standard input: line 2 is blank"):
        read_lines("-", "targets file")


def test_prompts_from_standard_input(stdin):
    stdin((HEADER + ROW).encode())
    assert load_prompts(Path("-"))[0].prompt == "a red star"


def test_unreadable_file(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text("star\n")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)  # as root, chmod 000 would not stop the read
    with pytest.raises(UserError, match=r"^targets file cannot be read \(permission denied\): "):
        read_text(tmp_path / "t.txt", "targets file")


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "MAX_BYTES", 8)
    (tmp_path / "t.txt").write_text("star\nheart\n")
    with pytest.raises(UserError, match="larger than"):
        read_text(tmp_path / "t.txt", "targets file")


def test_a_stream_over_the_size_limit_is_refused(stdin, monkeypatch):
    monkeypatch.setattr(inputs, "MAX_BYTES", 8)
    stdin(b"star\nheart\n")
    with pytest.raises(UserError, match="on standard input is larger than"):
        read_text("-", "targets file")


def test_a_named_pipe_is_read(tmp_path):
    fifo = tmp_path / "targets"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("star\n"))
    writer.start()
    assert read_lines(fifo, "targets file") == ["star"]  # as with --targets <(...): not a regular file, still text
    writer.join()


# --- bad inputs: each a different kind of badness, each answered in one line naming it ------------------------


def csv_text(prompt="a star", seed="1", case="0", concept="shape=star", role="target", group=None) -> bytes:
    """A prompt CSV of one row (with a group column when ``group`` is given), as UTF-8 bytes."""
    fields = [prompt, seed, case, concept, role, *([group] if group is not None else [])]
    return (HEADER.rstrip("\n") + (",group" if group is not None else "") + "\n" + ",".join(fields) + "\n").encode()


CSV = "csv"  # read with load_prompts
LINES = "lines"  # read with read_lines(blank_lines="error")
PROMPT_LINES = "prompt-lines"  # read with read_lines(blank_lines="skip")

BAD_INPUTS = [
    # the file itself
    pytest.param(LINES, None, "not found", id="missing-file"),
    pytest.param(LINES, "DIR", "is a directory, not a file", id="directory"),
    pytest.param(LINES, "\0PATH", "path has a NUL character", id="nul-in-path"),
    pytest.param(LINES, "FILE/x", "not found", id="path-through-a-file"),
    pytest.param(LINES, b"\xff\xfes\x00t\x00a\x00r\x00", "UTF-16", id="utf16-le-with-bom"),
    pytest.param(LINES, b"\xfe\xff\x00s\x00t", "UTF-16", id="utf16-be-with-bom"),
    pytest.param(LINES, b"s\x00t\x00a\x00r\x00\n\x00", "NUL character on line 1", id="utf16-without-bom"),
    pytest.param(LINES, b"star\nh\xe9art\n", "byte 0xE9 on line 2", id="latin1"),
    pytest.param(LINES, b"\x89PNG\r\n\x1a\n\x00\x00", "not a UTF-8 text file", id="png-image"),
    pytest.param(LINES, b"star\n\xed\xa0\x80\n", "not a UTF-8 text file", id="encoded-surrogate"),
    pytest.param(LINES, b"star\nhe\x00art\n", "NUL character on line 2", id="nul-byte"),
    # lines of names
    pytest.param(LINES, b"", "has no lines (it is empty)", id="empty-file"),
    pytest.param(LINES, b"star\n\nheart\n", "line 2 is blank", id="blank-line"),
    pytest.param(LINES, b"star\n   \t\n", "line 2 is blank", id="whitespace-line"),
    pytest.param(LINES, b"\n", "line 1 is blank", id="only-a-newline"),
    pytest.param(PROMPT_LINES, b" \n\t\n", "no lines (it is empty or every line is blank)", id="all-blank-prompts"),
    pytest.param(LINES, b"star\x0bheart\n", "U+000B", id="vertical-tab"),
    pytest.param(LINES, b"star\x0cheart\n", "U+000C", id="form-feed"),
    pytest.param(LINES, "star\u2028heart\n".encode(), "U+2028 (LINE SEPARATOR)", id="line-separator"),
    pytest.param(LINES, "star\u2029heart\n".encode(), "U+2029", id="paragraph-separator"),
    pytest.param(LINES, "star\u0085heart\n".encode(), "U+0085", id="next-line-c1"),
    pytest.param(LINES, b"star\n\xef\xbb\xbfheart\n", "U+FEFF", id="bom-mid-file"),
    pytest.param(LINES, "st\u200bar\n".encode(), "U+200B (ZERO WIDTH SPACE)", id="zero-width-space"),
    pytest.param(LINES, b"star\x1b[31m\n", "U+001B", id="ansi-escape"),
    pytest.param(LINES, b"star\x7f\n", "U+007F", id="delete-character"),
    pytest.param(LINES, b"x" * 10_001 + b"\n", "10,001 characters long", id="absurdly-long-line"),
    # prompt CSV files
    pytest.param(CSV, b"", "missing column", id="csv-empty"),
    pytest.param(CSV, HEADER.encode(), "no prompts", id="csv-header-only"),
    pytest.param(CSV, b"prompt;evaluation_seed;case_number;concept;role\n", "missing column", id="csv-semicolons"),
    pytest.param(CSV, b"prompt\tevaluation_seed\tcase_number\tconcept\trole\n", "missing column", id="tsv"),
    pytest.param(CSV, (HEADER.upper() + ROW).encode(), "missing column", id="csv-upper-case-header"),
    pytest.param(CSV, ("prompt,prompt," + HEADER[7:] + "a,b," + ROW).encode(), "appears twice", id="csv-dup-col"),
    pytest.param(CSV, (HEADER + "a red star,1,0\n").encode(), "wrong number of fields (3;", id="csv-short-row"),
    pytest.param(CSV, csv_text(prompt="a red, star"), "wrong number of fields (6;", id="csv-unquoted-comma"),
    pytest.param(CSV, csv_text(prompt='"a red star'), ":2: malformed CSV (a quote opened here is", id="open-quote"),
    pytest.param(CSV, csv_text(prompt='"a red" star'), "malformed CSV (',' expected", id="csv-stray-quote"),
    pytest.param(CSV, csv_text(prompt='"a red\nstar"'), "runs over several lines", id="csv-multiline-field"),
    pytest.param(CSV, csv_text(prompt=""), "empty prompt", id="csv-empty-prompt"),
    pytest.param(CSV, csv_text(role="erase"), "role must be", id="csv-bad-role"),
    pytest.param(CSV, csv_text(role="Target"), "role must be", id="csv-role-case"),
    pytest.param(CSV, csv_text(concept="shape=blob"), "bad concept", id="csv-unknown-value"),
    pytest.param(CSV, csv_text(concept="size=big"), "bad concept", id="csv-unknown-factor"),
    pytest.param(CSV, csv_text(concept="star"), "not factor=value", id="csv-concept-without-factor"),
    pytest.param(CSV, csv_text(concept=""), "names no factor", id="csv-empty-concept"),
    pytest.param(CSV, csv_text(seed="one"), "integer", id="seed-word"),
    pytest.param(CSV, csv_text(seed=""), "must be an integer, got ''", id="seed-empty"),
    pytest.param(CSV, csv_text(seed="1.0"), "integer", id="seed-decimal"),
    pytest.param(CSV, csv_text(seed="1e3"), "integer", id="seed-exponent"),
    pytest.param(CSV, csv_text(seed="1_000"), "integer", id="seed-underscore"),
    pytest.param(CSV, csv_text(seed="0x10"), "integer", id="seed-hex"),
    pytest.param(CSV, csv_text(seed="١٢"), "integer", id="seed-arabic-indic-digits"),
    pytest.param(CSV, csv_text(seed="-1"), "'evaluation_seed' must be an integer in [0, 2**63", id="seed-negative"),
    pytest.param(CSV, csv_text(seed=str(2**63)), "2**63 - 1], got 9223372036854775808", id="seed-2-63"),
    pytest.param(CSV, csv_text(seed=str(2**64 - 1)), "2**63 - 1", id="seed-2-64-minus-1"),
    pytest.param(CSV, csv_text(seed="9" * 5000), "2**63 - 1", id="seed-5000-digits"),
    pytest.param(CSV, csv_text(case="-3"), "'case_number' must be an integer in", id="case-negative"),
    pytest.param(CSV, csv_text(case=str(2**70)), "'case_number' must be an integer in", id="case-huge"),
    pytest.param(CSV, csv_text(case="2.5"), "'case_number' must be an integer", id="case-decimal"),
    pytest.param(CSV, (HEADER + ROW + ROW).encode(), ":3: case_number 0 is already used on line 2", id="case-twice"),
    pytest.param(CSV, csv_text(prompt="a\0star"), "NUL character on line 2", id="csv-nul"),
    pytest.param(CSV, csv_text(prompt="a\x1bstar"), "U+001B", id="csv-control-character"),
    pytest.param(CSV, csv_text(prompt="a\u2028star"), "U+2028", id="csv-line-separator"),
    pytest.param(CSV, csv_text(group="short\u200b"), "column 'group' has an invisible", id="csv-zero-width-group"),
    pytest.param(CSV, csv_text(prompt="x" * 10_001), "10,001 characters long", id="csv-long-field"),
    pytest.param(CSV, csv_text(prompt="x" * 200_000), "field larger than field limit", id="csv-huge-field"),
    pytest.param(CSV, (HEADER + ROW).encode("utf-16"), "UTF-16", id="csv-utf16"),
    pytest.param(CSV, (HEADER + "café,1,0,shape=star,target\n").encode("cp1252"), "byte 0xE9", id="csv-cp1252"),
    pytest.param(CSV, (HEADER + ROW).encode() + b"\xef\xbb\xbf" + ROW.encode(), "U+FEFF", id="csv-joined-with-bom"),
]


@pytest.mark.parametrize(("reader", "content", "fragment"), BAD_INPUTS)
def test_bad_input_is_one_line(tmp_path, reader, content, fragment):
    path = _bad_path(tmp_path, content)
    with pytest.raises(UserError) as info:
        if reader == CSV:
            load_prompts(path)
        else:
            read_lines(path, "targets file", blank_lines="error" if reader == LINES else "skip")
    message = str(info.value)
    assert fragment in message and "\n" not in message, message


def test_the_bad_inputs_are_many_and_distinct():
    ids = [p.id for p in BAD_INPUTS]
    assert len(ids) == len(set(ids)) >= 30
    assert len({(p.values[0], p.values[1]) for p in BAD_INPUTS}) == len(BAD_INPUTS)


def _bad_path(tmp_path: Path, content: bytes | str | None) -> Path:
    """A path holding ``content``; None: a missing file, "DIR": a folder, "FILE/x": under a file, "\\0PATH": NUL."""
    if content is None:
        return tmp_path / "missing.txt"
    if content == "DIR":
        (tmp_path / "folder").mkdir()
        return tmp_path / "folder"
    if content == "FILE/x":
        (tmp_path / "file").write_text("star\n")
        return tmp_path / "file" / "x"
    if content == "\0PATH":
        return tmp_path / "bad\0name.txt"
    (tmp_path / "input").write_bytes(content)
    return tmp_path / "input"
