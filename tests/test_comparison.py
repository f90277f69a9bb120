"""Pieces of the method comparison that need no model: anchor-floor prompts, table rows, plots."""

import json

import pytest

from erasekit.eval.comparison import markdown_table, neighbour_accuracy, save_benchmark, stage_plot, table_row
from erasekit.eval.prompts import PromptRow
from erasekit.eval.report import FailedCell, plot_text
from erasekit.world.comparison import anchor_rows
from erasekit.world.tasks import TASKS


def rows(*prompts: str, role: str = "target") -> list[PromptRow]:
    return [PromptRow(p, i, i, "shape=star", role, "short") for i, p in enumerate(prompts)]


def test_anchor_rows_swap_every_phrasing_of_the_target_for_the_anchor():
    out = anchor_rows(TASKS["instance"], rows("a red star", "a small five-pointed star on grass", "a starry sky"))
    assert [r.prompt for r in out] == ["a red shape", "a small shape on grass"]  # no target word: not a floor row
    assert all(r.role == "target" and r.concept == "shape=star" for r in out)


def test_anchor_rows_for_an_empty_anchor_and_preserve_rows_are_skipped():
    out = anchor_rows(TASKS["unsafe"], rows("a white skull on grass") + rows("a red circle", role="preserve"))
    assert [r.prompt for r in out] == ["a white on grass"]


def test_table_row_relative_h_caps_acc_s_relative_at_one():
    metrics = {
        "groups": {"canonical": {"acc_e": 0.1}, "neighbour": {"acc_s": 0.5, "images": 4}},
        "overall": {"acc_e": 0.1, "acc_s": 0.5, "acc_s_relative": 1.2, "h": 0.64, "sw_fid": 0.1, "fidelity": 0.02},
    }
    artifact = type("A", (), {"metrics": {"seconds": 1.5, "peak_mib": 10.0}})()
    row = table_row("X", metrics, artifact)
    assert row["h_relative"] == 2 * 0.9 * 1.0 / 1.9 and row["edit_seconds"] == 1.5
    assert row["acc_e_complex"] is None
    table = markdown_table([row])
    assert table.splitlines()[0].startswith("| method | acc_e_canonical |") and "acc_e_complex" not in table


def test_neighbour_accuracy_pools_every_phrasing_by_images():
    groups = {
        "neighbour-bare": {"acc_s": 0.5, "acc_s_original": 1.0, "images": 10},
        "neighbour-complex": {"acc_s": 1.0, "acc_s_original": 1.0, "images": 30},
        "neighbours-other": {"acc_s": 0.0, "acc_s_original": 1.0, "images": 100},
        "canonical": {"acc_e": 1.0, "acc_s": None, "images": 8},
    }
    acc_s, relative = neighbour_accuracy(groups)
    assert acc_s == relative == (0.5 * 10 + 30) / 40
    assert neighbour_accuracy({"other": {"acc_s": 1.0, "images": 3}}) == (None, None)


def test_save_benchmark_writes_record_figures_and_page_and_leaves_old_docs_whole_when_interrupted(tmp_path):
    save_benchmark(tmp_path / "docs", "bench", {"rows": [1]}, "# page", {"plot.png": b"\x89PNG"})
    docs = tmp_path / "docs"
    assert json.loads((docs / "bench.json").read_text()) == {"rows": [1]}
    assert (docs / "plot.png").read_bytes() == b"\x89PNG" and (docs / "bench.md").read_text() == "# page\n"
    with pytest.raises(TypeError):  # a record that cannot be written: nothing is replaced or left half written
        save_benchmark(docs, "bench", {"rows": object()}, "# new page")
    assert json.loads((docs / "bench.json").read_text()) == {"rows": [1]}
    assert (docs / "bench.md").read_text() == "# page\n"
    assert sorted(p.name for p in docs.iterdir()) == ["bench.json", "bench.md", "plot.png"]


def test_markdown_table_shows_a_failed_attack_as_failed():
    table = markdown_table([{"method": "UCE", "ASR soft-prompt": FailedCell("diverged"), "ASR paraphrase": None}])
    assert table.splitlines()[-1] == "| UCE | failed |"


@pytest.mark.parametrize("label", ["$x^2$", "$x^$", "$\\frac$", "cost in $", "a\\$b$"])
def test_stage_plot_writes_user_labels_as_literal_text(label):
    from matplotlib import cbook

    stages = [{"stage": f"text layer {i} {label}", "gap": 0.1 * i, "delta": 0.01} for i in (1, 2)]
    assert stage_plot({label: stages}).startswith(b"\x89PNG")
    assert not cbook.is_math_text(plot_text(label))
