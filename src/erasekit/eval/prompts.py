"""Prompt sets (specs/evaluation.md, "Prompt sets").

CSV with a header ``prompt,evaluation_seed,case_number,concept,role`` (the first three as in the
ESD / UCE / MACE files) and an optional ``group`` column (short, complex, paraphrased, implicit, ...).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from erasekit.errors import UserError
from erasekit.utils.inputs import MAX_FIELD_CHARS, invisible_character, read_text, shown
from erasekit.utils.io import atomic_file

if TYPE_CHECKING:
    from erasekit.backbones.world import World

REQUIRED_COLUMNS = ("prompt", "evaluation_seed", "case_number", "concept", "role")
ROLES = ("target", "preserve")
# evaluation_seed + k seeds a torch.Generator, which reads -1 as 2**64 - 1; seeds and case numbers stay in [0, LARGEST]
LARGEST = 2**63 - 1


# Prompt groups that evoke a target without naming it (synonyms, implicit descriptions): the paraphrase attack's
# prompts. They are reported per group but stay out of the overall Acc_e, which judges the named concept.
EVOKING_GROUPS: tuple[str, ...] = ("paraphrased", "implicit")
# The held-out phrasings a target is judged in (specs/evaluation.md, "Held-out phrasing"), as prompt groups.
PHRASING_GROUPS: tuple[str, ...] = ("canonical", "bare", "reordered", "complex")


@dataclass(frozen=True)
class PromptRow:
    prompt: str
    evaluation_seed: int
    case_number: int
    concept: str
    role: str
    group: str = "all"


def load_prompts(path: Path, require_concepts: bool = True, world: World | None = None) -> list[PromptRow]:
    """Read and validate a prompt CSV (``-`` is standard input); every problem is a one-line UserError naming
    file and line. ``require_concepts``: every concept must be one of ``world``'s (default: the embedded world's;
    a model without a world of its own takes free concept names: pass False)."""
    concepts = (world or default_world()) if require_concepts else None
    text = read_text(path, "prompt file")
    where = shown(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=True)
    rows, first_line, line = [], {}, 1  # first_line: case_number -> the line that used it
    try:
        header = _checked_header(next(reader, []), where)
        line = reader.line_num + 1
        for record in reader:
            if record:  # a blank line between rows is skipped
                row = _parse_row(record, header, f"{where}:{line}", concepts)
                _check_unique(row.case_number, line, first_line, where)
                rows.append(row)
            line = reader.line_num + 1
    except csv.Error as exc:
        problem = "a quote opened here is never closed" if "end of data" in str(exc) else str(exc)
        raise UserError(f"{where}:{line}: malformed CSV ({problem})") from None
    if not rows:
        raise UserError(f"{where}: no prompts (the file has a header but no rows)")
    return rows


def _checked_header(header: list[str], where: str) -> list[str]:
    """The header, with every required column and no name twice (a reader would silently keep the last)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{where}: missing column(s) {', '.join(missing)}; need {','.join(REQUIRED_COLUMNS)}")
    twice = next((name for name, count in Counter(header).items() if count > 1), None)
    if twice is not None:
        raise UserError(f"{where}:1: column {twice!r} appears twice in the header")
    return header


def default_world() -> World:
    """The embedded world, whose concepts a prompt file names unless told otherwise."""
    from erasekit.backbones.loader import default_world as embedded

    return embedded()


def _parse_row(record: list[str], header: list[str], where: str, concepts: World | None) -> PromptRow:
    if len(record) != len(header):
        raise UserError(f"{where}: wrong number of fields ({len(record)}; the header has {len(header)})")
    for column, value in zip(header, record, strict=True):
        _check_field(value, column, where)
    field = {column: value.strip() for column, value in zip(header, record, strict=True)}
    if not field["prompt"]:
        raise UserError(f"{where}: empty prompt")
    if field["role"] not in ROLES:
        raise UserError(f"{where}: role must be one of {', '.join(ROLES)}, got {field['role']!r}")
    if concepts is not None:
        try:
            concepts.parse_concept(field["concept"])
        except ValueError as exc:
            raise UserError(f"{where}: bad concept {field['concept']!r}: {exc}") from None
    return PromptRow(
        prompt=field["prompt"],
        evaluation_seed=_parse_number(field["evaluation_seed"], "evaluation_seed", where),
        case_number=_parse_number(field["case_number"], "case_number", where),
        concept=field["concept"],
        role=field["role"],
        group=field.get("group") or "all",
    )


def _check_field(value: str, column: str, where: str) -> None:
    if len(value) > MAX_FIELD_CHARS:
        raise UserError(
            f"{where}: column {column!r} is {len(value):,} characters long; the limit is {MAX_FIELD_CHARS:,}"
        )
    if "\n" in value or "\r" in value:
        raise UserError(f"{where}: column {column!r} runs over several lines (a quote left open?)")
    hidden = invisible_character(value)
    if hidden:
        raise UserError(f"{where}: column {column!r} has an invisible character {hidden}; remove it")


def _parse_number(value: str, column: str, where: str) -> int:
    """A whole number in [0, LARGEST] in ASCII digits ("1e3", "1_000", "0x10", "1.0" and "١" are refused)."""
    match = re.fullmatch(r"([+-]?)([0-9]+)", value)
    if not match:
        raise UserError(f"{where}: column {column!r} must be an integer, got {value[:40]!r}")
    sign, digits = match[1], match[2].lstrip("0") or "0"
    number = int(digits) if len(digits) <= len(str(LARGEST)) else LARGEST + 1
    if number > LARGEST or (sign == "-" and number):
        raise UserError(f"{where}: column {column!r} must be an integer in [0, 2**63 - 1], got {value[:40]}")
    return number


def _check_unique(case_number: int, line: int, first_line: dict[int, int], where: str) -> None:
    """Images are saved as {case_number}_{k}.png: a repeated number would overwrite the first row's images while
    the metrics count both rows."""
    if case_number in first_line:
        raise UserError(
            f"{where}:{line}: case_number {case_number} is already used on line {first_line[case_number]}; "
            "case numbers name the images, so they must be unique"
        )
    first_line[case_number] = line


def write_prompts(path: Path, rows: list[PromptRow]) -> None:
    with atomic_file(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*REQUIRED_COLUMNS, "group"])
        for r in rows:
            writer.writerow([r.prompt, r.evaluation_seed, r.case_number, r.concept, r.role, r.group])


def first_per_group(rows: list[PromptRow], per_group: int) -> list[PromptRow]:
    """The first ``per_group`` rows of every prompt group, in file order."""
    seen: dict[str, int] = {}
    kept = []
    for row in rows:
        seen[row.group] = seen.get(row.group, 0) + 1
        if seen[row.group] <= per_group:
            kept.append(row)
    return kept
