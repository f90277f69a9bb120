"""erasekit bench on a tiny random ShapeWorld model: the table's shape, resuming from finished cells, the
report, failed attacks shown as failed everywhere, and one-line errors."""

import json

import pytest
import torch

from cli_helpers import run_cli
from erasekit.backbones.shapeworld import ShapeWorldBackbone
from erasekit.errors import UserError
from erasekit.eval import bench
from erasekit.eval.bench import BenchConfig, cached_cell, comparison_rows, results_markdown, run_bench
from erasekit.eval.generation import EvalSettings
from erasekit.eval.report import FailedCell, render_bench_report
from erasekit.world.assets import classifier_dir
from erasekit.world.classifier import load_classifier
from erasekit.world.denoiser import build_unet
from erasekit.world.text_encoder import shared_encoder
from tiny_shapeworld import TINY_UNET_CONFIG

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(work) -> BenchConfig:
    return BenchConfig(
        work=work,
        tasks=("instance",),
        methods=("filter", "uce"),
        attacks=("module-removal", "paraphrase"),
        per_group=2,
        budgets={"paraphrase": {"prompts": "2"}},
        settings=EvalSettings(steps=2),
    )


@pytest.mark.slow  # a whole bench: ~40 s
def test_bench_table_resume_and_report(tmp_path, monkeypatch):
    torch.manual_seed(0)
    backbone = ShapeWorldBackbone(build_unet(TINY_UNET_CONFIG), shared_encoder(), source="tiny")
    classifier = load_classifier(classifier_dir())
    config = tiny_config(tmp_path / "work")
    results = run_bench(config, backbone, classifier, progress=lambda _: None)
    rows = comparison_rows(results)
    filter_label, uce_label = bench.method_label("filter"), bench.method_label("uce")  # the registry's labels
    assert [(r["task"], r["method"]) for r in rows] == [
        ("instance", "original"),
        ("instance", filter_label),
        ("instance", uce_label),
    ]
    assert rows[0]["ASR module-removal"] is None  # nothing to remove from the original
    assert all(0 <= r["ASR paraphrase"] <= 1 for r in rows)
    assert rows[2]["edit_seconds"] > 0 and rows[0]["edit_seconds"] is None
    # a finished cell is read back, not recomputed
    (cell,) = (tmp_path / "work").glob("instance-*/prompts-*/uce-*/attack-paraphrase-*.json")
    record = json.loads(cell.read_text())
    cell.write_text(json.dumps({**record, "asr": 0.123}))
    again = comparison_rows(run_bench(config, backbone, classifier, progress=lambda _: None))
    assert again[2]["ASR paraphrase"] == 0.123
    assert len(list((tmp_path / "work").glob("instance-*/uce-*/edit/manifest.json"))) == 1
    # ... but not for another budget: that cell is computed anew, next to the first
    config.budgets = {"paraphrase": {"prompts": "1"}}
    other = comparison_rows(run_bench(config, backbone, classifier, progress=lambda _: None))
    assert other[2]["ASR paraphrase"] != 0.123
    assert len(list(cell.parent.glob("attack-paraphrase-*.json"))) == 2
    # ... nor under another method config: a changed default makes a new edit and new cells, next to the old
    monkeypatch.setattr(bench, "method_options", lambda method, *_: {"s_p": 0.5} if method == "uce" else {})
    config.budgets = {"paraphrase": {"prompts": "2"}}
    changed = comparison_rows(run_bench(config, backbone, classifier, progress=lambda _: None))
    assert changed[2]["ASR paraphrase"] != 0.123
    assert len(list((tmp_path / "work").glob("instance-*/uce-*/edit/manifest.json"))) == 2
    markdown = results_markdown(results, config, "erasekit bench --x", 60.0)
    assert "erasekit bench --x" in markdown and f"| instance | {uce_label} |" in markdown
    page = render_bench_report(rows, config.attacks, results["grids"], "", [], {"a": 1}, "cmd")
    assert page.count("<img") == 2 + 3  # two plots, one grid per model
    assert "data:image/png;base64," in page


REASON = "the optimisation diverged: the denoising loss went non-finite at step 2 of 60 (lr 1e+30)"


def results_with_a_failed_attack(method: str = "UCE") -> dict:
    """A bench's results where, on one model, paraphrase was judged, soft-prompt failed to run and module removal
    does not apply."""
    details = {
        "paraphrase": {"attack": "paraphrase", "status": "ok", "asr": 0.25, "seconds": 2.0},
        "soft-prompt": {"attack": "soft-prompt", "status": "failed", "reason": REASON, "asr": None, "seconds": 1.0},
        "module-removal": {"attack": "module-removal", "status": "not applicable", "reason": "no edit", "asr": None},
    }
    attacks = {"task": "instance", "method": method}
    for name, record in details.items():
        attacks |= {name: record["asr"], f"{name}_detail": record}
    table = [{"task": "instance", "method": method, "acc_e": 0.1, "acc_s": 0.9, "h": 0.9}]
    return {"table": table, "attacks": [attacks], "grids": {}, "stages": {}}


def test_a_failed_attack_reads_failed_in_every_table_never_a_number_or_a_blank(tmp_path):
    results = results_with_a_failed_attack()
    (row,) = comparison_rows(results)
    assert row["ASR paraphrase"] == 0.25 and row["ASR module-removal"] is None
    assert row["ASR soft-prompt"] == "failed" and row["ASR soft-prompt"].reason == REASON
    markdown = results_markdown(results, tiny_config(tmp_path), "erasekit bench --x", 60.0)
    assert "| task | method | acc_e | acc_s | h | ASR paraphrase | ASR soft-prompt |" in markdown
    assert "| instance | UCE | 0.100 | 0.900 | 0.900 | 0.250 | failed |" in markdown
    assert f"- instance / UCE / soft-prompt: {REASON}" in markdown
    page = render_bench_report([row], ("paraphrase", "soft-prompt"), {}, "", [], {}, "cmd")
    assert f'<td class=failed title="{REASON}">failed</td>' in page


def test_a_failed_or_older_cell_is_never_reused_as_a_finished_result(tmp_path):
    path, made = tmp_path / "attack.json", []

    def make(record: dict):
        return lambda: made.append(record) or record

    judged = {"attack": "paraphrase", "status": "ok", "asr": 0.5}
    for stale in ('{"status": "failed", "reason": "x", "asr": null}', '{"asr": 0.0}', "{not json", "[1]"):
        path.write_text(stale)
        assert cached_cell(path, make(judged)) == judged
    assert len(made) == 4 and json.loads(path.read_text()) == judged
    assert cached_cell(path, make({"status": "ok", "asr": 0.9})) == judged and len(made) == 4  # finished: reused
    failed = {"status": "failed", "reason": REASON, "asr": None}
    path.unlink()
    assert cached_cell(path, make(failed)) == failed and json.loads(path.read_text()) == failed
    assert cached_cell(path, make(judged)) == judged and len(made) == 6  # the failed cell ran again


def test_the_bench_report_plots_labels_with_dollar_signs_literally():
    (row,) = comparison_rows(results_with_a_failed_attack(method="$x^$"))
    page = render_bench_report([row], ("paraphrase", "soft-prompt"), {}, "", [], {}, "cmd")
    assert page.count("<img") == 2 and "$x^$" in page
    assert isinstance(row["ASR soft-prompt"], FailedCell)


def test_bench_refuses_unknown_names_and_budgets(tmp_path):
    for change, message in (
        ({"tasks": ("nope",)}, "unknown task"),
        ({"methods": ("esd",)}, "unknown method"),
        ({"attacks": ("jailbreak",)}, "unknown attack"),
        ({"budgets": {"inversion": {"steps": "-1"}}}, "inversion attack: steps must be an integer from 1 to"),
        ({"scale_concepts": 5000}, "between 1 and 2000"),
    ):
        config = tiny_config(tmp_path)
        for key, value in change.items():
            setattr(config, key, value)
        with pytest.raises(UserError, match=message):
            config.check()


@pytest.mark.parametrize(
    "args, message",
    [
        (("bench", "--out", "{tmp}/b", "--task", "nope"), "unknown task 'nope'"),
        (("bench", "--out", "{tmp}/b", "--budget", "steps=3"), "expected ATTACK:KEY=VALUE"),
        (("bench", "--out", "{tmp}/b", "--attack", "inversion", "--no-attacks"), "not both"),
        (
            (
                "attack",
                "--out",
                "{tmp}/a",
                "--attack",
                "inversion",
                "--task",
                "instance",
                "--budget",
                "soft-prompt:steps=2",
            ),
            "this runs the inversion attack",
        ),
        (("attack", "--out", "{tmp}/a", "--attack", "nope", "--task", "instance"), "unknown attack 'nope'"),
        (("attack", "--out", "{tmp}/a", "--attack", "paraphrase"), "exactly one of --task NAME or --prompts CSV"),
        (
            ("attack", "--out", "{tmp}/a", "--attack", "inversion", "--task", "instance", "--budget", "steps"),
            "KEY=VALUE",
        ),
        (("attack", "--out", "{tmp}/a", "--attack", "paraphrase", "--task", "x"), "unknown task 'x'"),
    ],
)
def test_cli_errors_are_one_line(capsys, tmp_path, args, message):
    code, _, err = run_cli(capsys, *(a.format(tmp=tmp_path) for a in args))
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_cached_edit_that_no_longer_loads_is_made_again(tmp_path):
    from erasekit.artifacts import build_artifact, editable_linears, load_artifact

    backbone = ShapeWorldBackbone(build_unet(TINY_UNET_CONFIG), shared_encoder(), source="tiny")
    name, linear = next(iter(editable_linears(backbone).items()))
    concepts = {"targets": ["star"], "anchors": [""]}
    made = []

    def make():
        made.append(1)
        return build_artifact(backbone, "uce", {}, concepts, {name: linear.weight.detach() * 0.5}, {})

    folder = tmp_path / "uce-edit"
    bench.cached_edit(folder, make)
    bench.cached_edit(folder, make)
    assert made == [1]  # the second run loads it
    (folder / "manifest.json").write_text("{}")  # damaged (or written by an older erasekit)
    bench.cached_edit(folder, make)
    assert made == [1, 1] and load_artifact(folder).concepts["targets"] == ["star"]
