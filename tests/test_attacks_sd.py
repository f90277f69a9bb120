"""Attacks on a (tiny random) Stable Diffusion model, judged by CLIP zero-shot: the judge, and
`erasekit attack --model SD --clip DIR` end to end with one-line errors."""

import json

import numpy as np
import pytest

from cli_helpers import run_cli
from erasekit.eval.prompts import PromptRow, write_prompts
from erasekit.eval.sd.clip import ClipJudge, LocalCLIP, zero_shot
from test_cli_errors import one_line_error
from test_sd_protocol import build_clip
from tiny_pipelines import build_sd

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = [
    PromptRow("a cat", 1, 0, "cat", "target", "short"),
    PromptRow("a kitten", 2, 1, "cat", "target", "paraphrased"),
    PromptRow("a dog", 3, 2, "dog", "preserve", "short"),
    PromptRow("a red car", 4, 3, "car", "preserve", "short"),
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd-attack")
    write_prompts(root / "prompts.csv", ROWS)
    return build_sd(root / "sd"), build_clip(root / "clip"), root / "prompts.csv"


def test_the_clip_judge_counts_an_image_when_its_own_concept_wins(folders):
    _, clip_dir, _ = folders
    clip = LocalCLIP(clip_dir)
    judge = ClipJudge(clip, ["car", "cat", "dog"], "a photo of {concept}")
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    predicted, _ = zero_shot(clip, clip.embed_images(images), judge.classes, judge.template)
    expected = [float(judge.classes[p] == r.concept) for p, r in zip(predicted, ROWS, strict=True)]
    assert judge(ROWS, images).tolist() == expected
    with pytest.raises(Exception, match="at least two concept names"):
        ClipJudge(clip, ["cat"], "a photo of {concept}")


def test_cli_attacks_a_filter_edit_on_sd(capsys, folders, tmp_path):
    sd, clip, prompts = folders
    code, _, err = run_cli(
        capsys,
        "erase",
        "--method",
        "filter",
        "--model",
        sd,
        "--target",
        "cat",
        "--anchor",
        "dog",
        "--out",
        tmp_path / "edit",
    )
    assert code == 0, err
    for attack in ("module-removal", "paraphrase"):
        out = tmp_path / attack
        code, _, err = run_cli(
            capsys,
            "attack",
            "--model",
            sd,
            "--clip",
            clip,
            "--edit",
            tmp_path / "edit",
            "--prompts",
            prompts,
            "--attack",
            attack,
            "--steps",
            "2",
            "--out",
            out,
        )
        assert code == 0, err
        record = json.loads((out / "attack.json").read_text())
        assert record["judge"] == "CLIP zero-shot" and 0.0 <= record["asr"] <= 1.0
        assert record["model"]["family"] == "sd"
        if attack == "paraphrase":  # the kitten prompt: no "cat" in it
            assert record["images"] == 1 and "kitten" in (out / "prompts.csv").read_text()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (("--attack", "soft-prompt"), "offers no learned-token access"),
        (("--attack", "paraphrase", "--no-clip"), "--clip judges attacks on a diffusers model"),
    ],
)
def test_cli_attack_errors_on_sd(capsys, folders, tmp_path, extra, fragment):
    sd, clip, prompts = folders
    args = ["attack", "--model", sd, "--prompts", prompts, "--target", "cat", "--steps", "2", "--out", tmp_path / "o"]
    args += [a for a in extra if a != "--no-clip"] + ([] if "--no-clip" in extra else ["--clip", clip])
    code, _, err = run_cli(capsys, *args)
    one_line_error(code, err, fragment)
    assert not (tmp_path / "o").exists()


def test_cli_attack_refuses_clip_on_shapeworld(capsys, folders, tmp_path):
    _, clip, _ = folders
    code, _, err = run_cli(
        capsys, "attack", "--task", "instance", "--attack", "paraphrase", "--clip", clip, "--out", tmp_path / "o"
    )
    one_line_error(code, err, "--clip judges attacks on a diffusers model")
