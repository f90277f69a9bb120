"""ETC on the shipped ShapeWorld model, judged on phrasings it never fitted (specs/etc.md §1b): a complex phrasing
of an erased triple is rewritten and no longer drawn; a neighbour one word away, in the same phrasing, is kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_cli
from erasekit.artifacts import apply_artifact, remove_artifact
from erasekit.backbones.loader import load_backbone
from erasekit.concepts.pairs import ConceptSet
from erasekit.eval.prompts import load_prompts
from erasekit.methods.base import erase_to_artifact
from erasekit.world.assets import classifier_dir
from erasekit.world.classifier import load_classifier
from erasekit.world.factors import VOCAB
from erasekit.world.tasks import prompt_file

ERASED = ["red striped star", "blue dotted heart", "green checkered circle"]
POOL = ["yellow solid square", "purple zigzag triangle", "orange ringed ring", "white outlined cross",
        "pink speckled diamond", "gray gradient arrow"]  # fmt: skip
COMPLEX = "a large {} in the upper left corner on a grass background, drawn neatly"


@pytest.fixture(scope="module")
def shapeworld():
    return load_backbone("shapeworld")


def _joint(classifier, images: np.ndarray, shape: str, colour: str, pattern: str) -> float:
    probs = classifier.predict(images)
    want = {"shape": shape, "colour": colour, "pattern": pattern}
    hits = [probs[f].argmax(1) == VOCAB.index(f, v) for f, v in want.items()]
    return float(np.logical_and.reduce(hits).mean())


@pytest.mark.slow
def test_a_complex_phrasing_of_an_erased_triple_is_rewritten_and_its_neighbour_kept(shapeworld, tmp_path: Path):
    artifact = erase_to_artifact(
        shapeworld, ConceptSet.build(ERASED, "", POOL), "etc", {"nir": False, "work_dir": str(tmp_path / "w")}
    )
    memory = next(iter(artifact.modules.values())).memory
    erased, neighbour = COMPLEX.format("red striped star"), COMPLEX.format("red striped heart")
    states, mask = shapeworld.encode([erased, neighbour])
    hit = memory.detect(states[0][mask[0]])[0]
    ids = shapeworld.token_segments([erased])[0].ids[0]
    words = shapeworld.encoder.tokenizer.convert_ids_to_tokens(ids)
    assert all(hit[words.index(w)] for w in ("red", "striped", "star"))  # every word of the phrase
    assert not hit[[i for i, w in enumerate(words) if w in ("grass", "upper", "large")]].any()
    classifier, seeds = load_classifier(classifier_dir()), list(range(12))
    prompts = [erased] * 12 + [neighbour] * 12
    before = shapeworld.generate(prompts, seeds * 2, steps=20)
    applied = apply_artifact(shapeworld, artifact)
    after = shapeworld.generate(prompts, seeds * 2, steps=20)
    remove_artifact(shapeworld, applied)
    assert _joint(classifier, before[:12], "star", "red", "striped") >= 0.6
    assert _joint(classifier, after[:12], "star", "red", "striped") <= 0.1
    kept_before = _joint(classifier, before[12:], "heart", "red", "striped")
    assert _joint(classifier, after[12:], "heart", "red", "striped") >= kept_before - 0.2


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("flag", "content", "fragment"),
    [
        ("--target-prompts", "", "no prompts"),
        ("--target-prompts", "\n  \n\n", "no prompts"),
        ("--templates", "a picture of a {}\na drawing without a slot\n", "needs exactly one {}"),
        ("--templates", "a picture of a {}\nthe a{} on grass\n", "tokenise"),
    ],
)
def test_bad_etc_input_is_one_line_and_writes_nothing(capsys, tmp_path: Path, flag, content, fragment):
    out = tmp_path / "edit"
    pool = _write(tmp_path / "pool.txt", "\n".join(POOL) + "\n")
    code, _, err = run_cli(
        capsys, "erase", "--method", "etc", "--target", "star", "--mapping-pool", pool,
        flag, _write(tmp_path / "input.txt", content), "--out", out,
    )  # fmt: skip
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "edit.work").exists()


def test_a_task_run_whose_fitted_prompts_overlap_its_evaluation_is_refused(capsys, tmp_path: Path):
    evaluated = next(r.prompt for r in load_prompts(prompt_file("instance")) if r.group == "canonical")
    template = evaluated.replace("star", "{}")  # fitting on an evaluation prompt of the task
    out = tmp_path / "edit"
    code, _, err = run_cli(
        capsys, "erase", "--method", "etc", "--task", "instance",
        "--templates", _write(tmp_path / "t.txt", template + "\n"), "--out", out,
    )  # fmt: skip
    assert code == 2 and "fitted on" in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
