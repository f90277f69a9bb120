"""Properties of the weights that ship inside the package (specs/shapeworld.md quality bars, on small samples)."""

import json

import numpy as np
import pytest

from cli_helpers import run_cli
from erasekit.backbones.loader import load_backbone
from erasekit.eval.prompts import load_prompts
from erasekit.world.assets import classifier_dir
from erasekit.world.captions import short_caption
from erasekit.world.classifier import heldout_accuracy, load_classifier
from erasekit.world.factors import VOCAB

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(classifier_dir())


def test_classifier_reads_fresh_renders(classifier):
    accuracy = heldout_accuracy(classifier, seed=424242, n=3000)
    assert min(accuracy.values()) >= 0.98, accuracy


def test_generated_images_show_what_the_prompt_asks(classifier):
    backbone = load_backbone("shapeworld")
    rng = np.random.default_rng(5)
    triples = [(VOCAB.shape[i % 20], str(rng.choice(VOCAB.colour)), str(rng.choice(VOCAB.pattern))) for i in range(64)]
    images = backbone.generate([short_caption(*t) for t in triples], list(range(64)))
    probs = classifier.predict(images)
    shape = np.mean([VOCAB.shape[p.argmax()] == t[0] for p, t in zip(probs["shape"], triples, strict=True)])
    colour = np.mean([VOCAB.colour[p.argmax()] == t[1] for p, t in zip(probs["colour"], triples, strict=True)])
    assert shape >= 0.8 and colour >= 0.85, (shape, colour)


def test_evaluate_cli_writes_metrics_and_report(capsys, tmp_path):
    rows = load_prompts("benchmarks/shapeworld_quality.csv")
    subset = tmp_path / "subset.csv"
    lines = open("benchmarks/shapeworld_quality.csv").read().splitlines()
    keep = [i for i, r in enumerate(rows) if r.group in ("short", "skull_implicit")][::4]
    subset.write_text("\n".join([lines[0], *(lines[i + 1] for i in keep)]) + "\n")
    code, _, err = run_cli(capsys, "evaluate", "--prompts", subset, "--out", tmp_path / "eval")
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["groups"]) == {"short", "skull_implicit"}
    s = metrics["settings"]  # no --steps / --guidance: the model's own, recorded with where it ran
    assert (s["steps"], s["guidance"], s["device"], s["dtype"]) == (25, 5.0, "cpu", "float32")
    assert s["model_defaults"]["scheduler"].startswith("DDIMScheduler") and s["model_defaults"]["width"] == 32
    assert metrics["overall"]["images"] == len(keep)
    assert metrics["overall"]["sw_fid"] > 0 and metrics["groups"]["short"]["agree_shape"] >= 0.7
    assert len(list((tmp_path / "eval" / "images").glob("*.png"))) == len(keep)
    assert "<table>" in (tmp_path / "eval" / "report.html").read_text()


def test_classify_cli_prints_json_per_image(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "generate", "--prompt", "a red solid square", "--num-images", "2", "--out", tmp_path / "gen"
    )
    assert code == 0, err
    code, out, err = run_cli(capsys, "classify", tmp_path / "gen" / "0_0.png", tmp_path / "gen" / "0_1.png")
    assert code == 0, err
    result = json.loads(out)
    assert len(result) == 2 and {"shape", "colour", "pattern", "background", "shape_probability"} <= set(result[0])
    assert sum(r["colour"] == "red" for r in result) >= 1


def test_demo_erases_star_and_writes_the_report(capsys, tmp_path):
    out = tmp_path / "demo"
    code, _, err = run_cli(capsys, "demo", "--per-group", "4", "--out", out)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    overall = metrics["overall"]
    assert overall["original"]["acc_e"] >= 0.5 and overall["acc_e"] <= 0.25, overall  # stars mostly gone
    assert overall["acc_s_relative"] >= 0.7, overall
    report = (out / "report.html").read_text()
    assert "Edit stages" in report and report.count("data:image/png;base64") >= 5  # 4 grids + stage plot
    assert (out / "edit" / "manifest.json").exists() and (out / "edit" / "tensors.safetensors").exists()


@pytest.mark.parametrize("task", ["instance", "style", "unsafe"])
def test_erasepro_erases_each_task_on_short_prompts(task, classifier):
    from erasekit.eval.comparison import MethodRun, erase_with, task_concepts
    from erasekit.eval.generation import EvalSettings
    from erasekit.world.protocol import evaluate
    from erasekit.world.tasks import TASKS, prompt_file

    backbone = load_backbone("shapeworld")
    rows = load_prompts(prompt_file(task))
    # every short prompt (40): at 16 images one image moves Acc_e by 0.06, the size of the margin
    rows = [r for r in rows if r.group in ("canonical", "bare")] + [
        r for r in rows if r.group == "neighbour-canonical"
    ][:16]
    artifact = erase_with(backbone, task_concepts(TASKS[task]), MethodRun("ErasePro", "erasepro", {}))
    metrics, _, _ = evaluate(backbone, rows, classifier, EvalSettings(), edit=artifact, progress=False)
    short, neighbour = metrics["overall"], metrics["groups"]["neighbour-canonical"]
    assert short["original"]["acc_e"] >= 0.6 and short["acc_e"] <= 0.3, short
    # and the neighbours survive (an ill-posed empty-anchor alignment once left unsafe neighbours at 0.07 of it)
    assert neighbour["acc_s_relative"] >= 0.6, neighbour


def test_erase_then_evaluate_with_the_edit(capsys, tmp_path):
    edit = tmp_path / "edit"
    code, _, err = run_cli(capsys, "erase", "--task", "instance", "--out", edit)
    assert code == 0, err
    manifest = json.loads((edit / "manifest.json").read_text())
    assert manifest["method"] == "erasepro" and manifest["metrics"]["stages"][-1]["residual"] < 1e-6
    prompts = tmp_path / "p.csv"
    prompts.write_text(
        "prompt,evaluation_seed,case_number,concept,role,group\n"
        + "".join(f"a cyan star,{s},{s},shape=star,target,short\n" for s in range(6))
        + "".join(f"a blue solid heart,{s},{6 + s},shape=heart;colour=blue,preserve,neighbour\n" for s in range(6))
    )
    out = tmp_path / "eval"
    code, _, err = run_cli(capsys, "evaluate", "--prompts", prompts, "--edit", edit, "--out", out)
    assert code == 0, err
    overall = json.loads((out / "metrics.json").read_text())["overall"]
    assert overall["original"]["acc_e"] >= 0.5 and overall["acc_e"] <= 0.34 and "fidelity" in overall
    assert "Edit stages" in (out / "report.html").read_text()
