from collections import Counter

import pytest

from erasekit.eval.prompts import load_prompts
from erasekit.world.factors import (
    COLOURS,
    IMPLICIT_SKULL_HELDOUT,
    IMPLICIT_SKULL_TRAIN,
    PATTERNS,
    SHAPES,
    parse_concept,
)
from erasekit.world.tasks import NEIGHBOUR_PHRASINGS, PRESERVE_GROUPS, TARGET_GROUPS, TASKS, prompt_file, task_prompts

NAMES = sorted(TASKS)


@pytest.fixture(scope="module", params=NAMES)
def task_rows(request):
    task = TASKS[request.param]
    return task, load_prompts(prompt_file(task.name))


def test_committed_csv_equals_fresh_prompts(task_rows):
    task, rows = task_rows
    assert rows == task_prompts(task), f"regenerate with benchmarks/make_task_prompts.py ({task.name})"
    assert [r.case_number for r in rows] == list(range(len(rows)))
    assert len({r.prompt for r in rows}) == len(rows)


def test_task_definitions():
    assert {n: (t.targets, t.anchor, t.kind) for n, t in TASKS.items()} == {
        "instance": (("star",), "shape", "object"),
        "style": (("striped",), "solid", "style"),
        "unsafe": (("skull",), "", "object"),
    }
    for task in TASKS.values():
        table = PATTERNS if task.kind == "style" else SHAPES
        assert 3 <= len(task.preserve) <= 6 and not set(task.preserve) & set(task.targets)
        assert all(table[task.value(p)][0] == p for p in (*task.targets, *task.preserve))
    assert prompt_file("style").parent.name == "tasks"


def test_the_task_prompts_ship_as_package_data_and_the_benchmarks_folder_links_to_them():
    from pathlib import Path

    import erasekit

    package = Path(erasekit.__file__).parent
    assert all(prompt_file(name).is_relative_to(package) and prompt_file(name).is_file() for name in TASKS)
    linked = Path(__file__).resolve().parents[1] / "benchmarks" / "tasks" / "instance.csv"
    assert linked.read_bytes() == prompt_file("instance").read_bytes()
    assert TASKS["instance"].rows() == load_prompts(prompt_file("instance")) and TASKS["style"].params == {}


def test_group_counts(task_rows):
    task, rows = task_rows
    expected = {("target", g): n for g, n in TARGET_GROUPS.items()}
    per_phrasing = PRESERVE_GROUPS["neighbour"] // len(NEIGHBOUR_PHRASINGS)
    expected.update({("preserve", f"neighbour-{p}"): per_phrasing for p in NEIGHBOUR_PHRASINGS})
    expected[("preserve", "other")] = PRESERVE_GROUPS["other"]
    if task.name == "unsafe":
        expected[("target", "implicit")] = 48
    assert Counter((r.role, r.group) for r in rows) == expected


def test_target_rows_name_only_the_erased_factor(task_rows):
    task, rows = task_rows
    values = {task.value(t) for t in task.targets}
    targets = [r for r in rows if r.role == "target"]
    assert targets and all(
        set(parse_concept(r.concept)) == {task.factor} and parse_concept(r.concept)[task.factor] in values
        for r in targets
    )
    explicit = [r for r in targets if r.group != "implicit"]
    assert all(any(w in r.prompt for w in task.forbidden_words()) for r in explicit)
    paraphrased = [r for r in targets if r.group == "paraphrased"]
    synonyms = [w for w in task.forbidden_words() if w not in task.targets]
    assert all(any(w in r.prompt for w in synonyms) for r in paraphrased)


def test_preserve_rows_never_mention_the_target(task_rows):
    task, rows = task_rows
    words = task.forbidden_words()
    assert set(task.targets) <= set(words) and len(words) >= 3
    preserve = [r for r in rows if r.role == "preserve"]
    assert preserve
    for r in preserve:
        assert not any(w.lower() in r.prompt.lower() for w in words), r.prompt
        assert set(parse_concept(r.concept)) == {"shape", "colour", "pattern"}
        assert parse_concept(r.concept)[task.factor] not in {task.value(t) for t in task.targets}
    neighbours = {parse_concept(r.concept)[task.factor] for r in preserve if r.group.startswith("neighbour-")}
    assert neighbours == {task.value(p) for p in task.preserve}
    others = {parse_concept(r.concept)[task.factor] for r in preserve if r.group == "other"}
    assert others and not others & neighbours


def test_each_phrasing_says_the_concept_its_own_way(task_rows):
    task, rows = task_rows
    by_group = {g: [r.prompt for r in rows if r.group == g] for g in {r.group for r in rows}}
    assert all(p.split(" ", 1)[0] in ("a", "an") for p in by_group["canonical"] + by_group["reordered"])
    assert not any(p.split(" ", 1)[0] in ("a", "an") for p in by_group["bare"])
    assert all(p.count(" ") >= 5 for p in by_group["complex"])  # size, position and background around the object
    for r in rows:  # reordered: the pattern word before the colour word
        if (
            r.group.endswith("reordered")
            and "pattern" in parse_concept(r.concept)
            and "colour" in parse_concept(r.concept)
        ):
            colour, pattern = (
                COLOURS[parse_concept(r.concept)["colour"]][0][0],
                PATTERNS[parse_concept(r.concept)["pattern"]][0],
            )
            assert r.prompt.index(pattern) < r.prompt.index(colour), r.prompt


def test_unsafe_implicit_prompts_are_held_out():
    rows = [r for r in load_prompts(prompt_file("unsafe")) if r.group == "implicit"]
    assert rows and all(r.role == "target" and r.concept == "shape=skull" for r in rows)
    for r in rows:
        assert "skull" not in r.prompt.lower()
        assert not any(r.prompt.startswith(t) for t in IMPLICIT_SKULL_TRAIN)
        assert any(r.prompt.startswith(h) for h in IMPLICIT_SKULL_HELDOUT)
    assert {h for h in IMPLICIT_SKULL_HELDOUT if any(r.prompt.startswith(h) for r in rows)} == set(
        IMPLICIT_SKULL_HELDOUT
    )
