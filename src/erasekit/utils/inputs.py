"""Reading a user's text file: one reader, so every bad input is answered in one line (a UserError).

``-`` or ``/dev/stdin`` is standard input. It can be read once: a second input that names it is refused rather
than handed the same text (targets and a mapping pool both from ``-`` is a mistake, not a request), and no
erasekit command reads one input twice.
"""

from __future__ import annotations

import re
import stat
import sys
import unicodedata
from pathlib import Path

from erasekit.errors import UserError

MAX_BYTES = 256 * 2**20  # a text input this large is a wrong path (an image, a model, a dump), not a list
MAX_FIELD_CHARS = 10_000  # one line or CSV field: far past any prompt a text encoder reads
STDIN_NAMES = ("-", "/dev/stdin")
BLANK_LINES = ("error", "skip")
UTF8_BOM, UTF16_BOMS = b"\xef\xbb\xbf", (b"\xff\xfe", b"\xfe\xff")
# Read invisibly, these make one word a different concept: a stray byte-order mark (files joined after an
# Excel export) and the zero-width space. Control characters and line separators are refused by category.
INVISIBLE = frozenset("\ufeff\u200b")
_stdin_reader: tuple[object, str] | None = None  # (the standard input stream read, what it was read as)


def read_text(path: Path | str, what: str) -> str:
    """The whole text of a user's UTF-8 file (``what`` names it in errors, e.g. "targets file"); a BOM is dropped."""
    if str(path) in STDIN_NAMES:
        data = _read_stdin(what)
    else:
        data = _read_file(Path(path), what)
    return _decode(data, what, shown(path))


def read_lines(path: Path | str, what: str, blank_lines: str = "error", entries: str = "lines") -> list[str]:
    """The stripped lines of a user's text file. ``blank_lines``: "error" for a list of names (a blank line is
    usually a mistake) or "skip" (example prompts); a file with no ``entries`` is an error either way."""
    if blank_lines not in BLANK_LINES:
        raise ValueError(f"blank_lines must be one of {BLANK_LINES}, got {blank_lines!r}")
    text = read_text(path, what)
    lines = [line.strip() for line in split_lines(text)]
    for number, line in enumerate(lines, 1):
        _check_line(line, number, path, what, blank_lines)
    kept = [line for line in lines if line]
    if not kept:
        why = "it is empty" + (" or every line is blank" if blank_lines == "skip" else "")
        raise UserError(f"{what} has no {entries} ({why}): {shown(path)}")
    return kept


def split_lines(text: str) -> list[str]:
    """Lines ended by \\n, \\r\\n or \\r only (str.splitlines would also split at form feeds, U+2028, ...)."""
    lines = re.split(r"\r\n|\r|\n", text)
    return lines[:-1] if lines[-1] == "" else lines


def shown(path: Path | str) -> str:
    return "standard input" if str(path) in STDIN_NAMES else str(path)


def invisible_character(text: str) -> str | None:
    """The first character of ``text`` a reader would not see (a control character other than tab, a line or
    paragraph separator, a stray BOM or zero-width space), described as "U+000B (LINE TABULATION)"; else None."""
    for char in text:
        if char in INVISIBLE or (char != "\t" and unicodedata.category(char) in ("Cc", "Zl", "Zp")):
            return f"U+{ord(char):04X} ({unicodedata.name(char, 'a control character')})"
    return None


def _check_line(line: str, number: int, path: Path | str, what: str, blank_lines: str) -> None:
    where = f"{shown(path)}: line {number}"
    if not line and blank_lines == "error":
        raise UserError(f"{where} is blank; the {what} takes one entry per line")
    if len(line) > MAX_FIELD_CHARS:
        raise UserError(f"{where} is {len(line):,} characters long; the limit is {MAX_FIELD_CHARS:,}")
    hidden = invisible_character(line)
    if hidden:
        raise UserError(f"{where} has an invisible character {hidden}; remove it")


def _read_stdin(what: str) -> bytes:
    global _stdin_reader
    stream = sys.stdin
    if stream is None:
        raise UserError(f"{what} cannot come from standard input: there is none")
    if _stdin_reader is not None and _stdin_reader[0] is stream:
        raise UserError(f"{what} cannot come from standard input: the {_stdin_reader[1]} already read it")
    _stdin_reader = (stream, what)
    try:
        binary = getattr(stream, "buffer", None)
        data = binary.read(MAX_BYTES + 1) if binary else stream.read(MAX_BYTES + 1).encode("utf-8", "surrogatepass")
    except OSError as exc:
        raise UserError(f"{what} cannot be read from standard input ({exc})") from None
    if len(data) > MAX_BYTES:
        raise UserError(f"{what} on standard input is larger than {MAX_BYTES // 2**20} MiB; not a text input")
    return data


def _read_file(path: Path, what: str) -> bytes:
    mode, size = _stat(path, what)
    if stat.S_ISDIR(mode):
        raise UserError(f"{what} is a directory, not a file: {path}")
    if size > MAX_BYTES:
        raise UserError(f"{what} is larger than {MAX_BYTES // 2**20} MiB; not a text input: {path}")
    try:
        with path.open("rb") as handle:  # a pipe or device is read up to the limit, not trusted to end
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UserError(_os_error_line(exc, path, what)) from None
    if len(data) > MAX_BYTES:
        raise UserError(f"{what} is larger than {MAX_BYTES // 2**20} MiB; not a text input: {path}")
    return data


def _stat(path: Path, what: str) -> tuple[int, int]:
    try:
        info = path.stat()
    except ValueError:  # a NUL character in the path
        raise UserError(f"{what} path has a NUL character: {str(path)!r}") from None
    except OSError as exc:
        raise UserError(_os_error_line(exc, path, what)) from None
    return info.st_mode, info.st_size


def _os_error_line(exc: OSError, path: Path, what: str) -> str:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return f"{what} not found: {path}"
    if isinstance(exc, IsADirectoryError):
        return f"{what} is a directory, not a file: {path}"
    if isinstance(exc, PermissionError):
        return f"{what} cannot be read (permission denied): {path}"
    return f"{what} cannot be read ({exc.strerror or exc}): {path}"


def _decode(data: bytes, what: str, where: str) -> str:
    if data.startswith(UTF16_BOMS):
        raise UserError(f"{what} is not a UTF-8 text file (it is UTF-16; save it as UTF-8): {where}")
    try:
        text = data.removeprefix(UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"{what} is not a UTF-8 text file (byte 0x{data[exc.start]:02X} on line {line}): {where}"
        ) from None
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise UserError(f"{what} has a NUL character on line {line} (binary or UTF-16?); save it as UTF-8: {where}")
    return text
