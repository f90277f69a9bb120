"""Prompt sets (specs/evaluation.md, "Prompt sets").

CSV with a header ``prompt,evaluation_seed,case_number,concept,role`` (the first three as in the
ESD / UCE / MACE files) and an optional ``group`` column (short, complex, paraphrased, implicit, ...).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from erasekit.errors import UserError
from erasekit.utils.io import atomic_file
from erasekit.world.factors import parse_concept

REQUIRED_COLUMNS = ("prompt", "evaluation_seed", "case_number", "concept", "role")
ROLES = ("target", "preserve")


# Prompt groups that evoke a target without naming it (synonyms, implicit descriptions): the paraphrase attack's
# prompts. They are reported per group but stay out of the overall Acc_e, which judges the named concept.
EVOKING_GROUPS: tuple[str, ...] = ("paraphrased", "implicit")


@dataclass(frozen=True)
class PromptRow:
    prompt: str
    evaluation_seed: int
    case_number: int
    concept: str
    role: str
    group: str = "all"

    @property
    def factors(self) -> dict[str, str]:
        return parse_concept(self.concept)


def _parse_int(value: str, column: str, line: int, path: Path) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"{path}:{line}: column {column!r} must be an integer, got {value!r}") from None


def load_prompts(path: Path, require_concepts: bool = True) -> list[PromptRow]:
    """Read and validate a prompt CSV; every problem is a one-line UserError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompt file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(missing)}; need {','.join(REQUIRED_COLUMNS)}")
            rows = [_parse_row(raw, n, path, require_concepts) for n, raw in enumerate(reader, start=2)]
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV ({exc})") from None
    if not rows:
        raise UserError(f"{path}: no prompts (the file has a header but no rows)")
    return rows


def _parse_row(raw: dict, line: int, path: Path, require_concepts: bool) -> PromptRow:
    if None in raw or any(raw.get(c) is None for c in REQUIRED_COLUMNS):
        raise UserError(f"{path}:{line}: wrong number of fields")
    prompt = raw["prompt"].strip()
    if not prompt:
        raise UserError(f"{path}:{line}: empty prompt")
    role = raw["role"].strip()
    if role not in ROLES:
        raise UserError(f"{path}:{line}: role must be one of {', '.join(ROLES)}, got {role!r}")
    concept = raw["concept"].strip()
    if require_concepts:
        try:
            parse_concept(concept)
        except ValueError as exc:
            raise UserError(f"{path}:{line}: bad concept {concept!r}: {exc}") from None
    return PromptRow(
        prompt=prompt,
        evaluation_seed=_parse_int(raw["evaluation_seed"], "evaluation_seed", line, path),
        case_number=_parse_int(raw["case_number"], "case_number", line, path),
        concept=concept,
        role=role,
        group=(raw.get("group") or "all").strip() or "all",
    )


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
