"""The Stable Diffusion protocol (eval/sd/) on a tiny random SD pipeline and a tiny random CLIP:
CLIP score and zero-shot against direct CLIPModel computations, FID / KID, NudeNet counting with a fake
detector, every knob in metrics.json, and `erasekit evaluate --clip` end to end with one-line errors."""

import json
import sys
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from cli_helpers import run_cli
from erasekit.backbones.loader import load_backbone
from erasekit.errors import UserError
from erasekit.eval.generation import EvalSettings, generate_rows
from erasekit.eval.prompts import PromptRow, write_prompts
from erasekit.eval.sd.clip import LocalCLIP
from erasekit.eval.sd.nudenet import NudeNetCounter
from erasekit.eval.sd.protocol import evaluate_sd
from erasekit.eval.sd.quality import (
    ClipImageFeatures,
    InceptionFeatures,
    extract_features,
    fid_kid,
    path_batches,
    reference_paths,
)
from erasekit.eval.sd.report import render_sd_report
from test_cli_errors import one_line_error
from tiny_pipelines import build_sd, tiny_clip_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = EvalSettings(num_images=2, steps=2, guidance=5.0, batch_size=4)
ROWS = [
    PromptRow("a cat", 1, 0, "cat", "target", "short"),
    PromptRow("a cat on a sofa", 7, 1, "cat", "target", "complex"),
    PromptRow("a dog", 2, 2, "dog", "preserve", "short"),
    PromptRow("a red car", 3, 3, "car", "preserve", "complex"),
]


def build_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny random CLIPModel (32x32 images) + CLIPProcessor saved with save_pretrained."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": tokenizer.model_max_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPModel(config).save_pretrained(str(folder))
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(folder))
    return folder


def save_images(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


class FakeDetector:
    """NudeNet's interface: flags a bright image (mean > cut) with one exposed part and a face."""

    def __init__(self, cut: float = 100.0):
        self.cut = cut
        self.paths: list[str] = []

    def detect(self, image_path: str) -> list[dict]:
        self.paths.append(image_path)
        with Image.open(image_path) as img:
            bright = np.asarray(img.convert("RGB")).mean() > self.cut
        if not bright:
            return [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.3, "box": [0, 0, 1, 1]}]
        return [
            {"class": "BELLY_EXPOSED", "score": 0.9, "box": [0, 0, 4, 4]},
            {"class": "FACE_FEMALE", "score": 0.95, "box": [0, 0, 4, 4]},
        ]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sdp")
    return {"sd": build_sd(root / "sd"), "clip": build_clip(root / "clip"), "root": root}


@pytest.fixture(scope="module")
def backbone(folders):
    return load_backbone(folders["sd"])


@pytest.fixture(scope="module")
def clip_model(folders):
    return CLIPModel.from_pretrained(str(folders["clip"])).eval(), CLIPProcessor.from_pretrained(str(folders["clip"]))


@pytest.fixture(scope="module")
def evaluated(folders, backbone):
    """The protocol with the preserve images themselves as the reference folder, and a fake NudeNet."""
    first = generate_rows(backbone, ROWS, SETTINGS, progress=False)
    preserve = [i for i, r in enumerate(first.rows) if r.role == "preserve"]
    reference = save_images(folders["root"] / "reference", first.images[preserve])
    cut = float(np.median(first.images.reshape(len(first.images), -1).mean(1)))  # half the images are "bright"
    counter = NudeNetCounter(FakeDetector(cut), threshold=0.6, version="fake-1")
    metrics, generated = evaluate_sd(
        backbone, ROWS, SETTINGS, folders["clip"], reference, nudenet=counter, progress=False
    )
    return metrics, generated, first, counter


def test_clip_score_matches_clip_model(evaluated, clip_model):
    metrics, generated, _, _ = evaluated
    model, processor = clip_model
    direct = []
    with torch.no_grad():
        for img, row in zip(generated.images, generated.rows, strict=True):
            inputs = processor(text=[row.prompt], images=[Image.fromarray(img)], return_tensors="pt", padding=True)
            out = model(**inputs)
            image = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
            text = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
            direct.append(max(100 * float((image * text).sum()), 0.0))
    reported = [entry["clip_score"] for entry in metrics["images"]]
    np.testing.assert_allclose(reported, direct, atol=1e-4)
    assert max(direct) > 1.0  # not all clamped to zero: the comparison is not vacuous
    roles = np.array([r.role for r in generated.rows])
    for role in ("target", "preserve"):
        expected = np.mean(np.array(direct)[roles == role])
        assert metrics["roles"][role]["clip_score"] == pytest.approx(expected, abs=1e-4)
        assert metrics["overall"][f"clip_score_{role}"] == pytest.approx(expected, abs=1e-4)
    groups = np.array([r.group for r in generated.rows])
    for group, summary in metrics["groups"].items():
        assert summary["clip_score"] == pytest.approx(np.mean(np.array(direct)[groups == group]), abs=1e-4)


def test_zero_shot_is_the_argmax_over_concepts(evaluated, clip_model):
    metrics, generated, _, _ = evaluated
    model, processor = clip_model
    classes = ["car", "cat", "dog"]
    assert metrics["settings"]["clip"]["classes"] == classes
    texts = [f"a photo of {c}" for c in classes]
    with torch.no_grad():
        inputs = processor(
            text=texts, images=[Image.fromarray(i) for i in generated.images], return_tensors="pt", padding=True
        )
        predicted = model(**inputs).logits_per_image.argmax(dim=1).numpy()
    assert [e["zero_shot_prediction"] for e in metrics["images"]] == [classes[k] for k in predicted]
    correct = np.array([classes[k] == r.concept for k, r in zip(predicted, generated.rows, strict=True)], float)
    roles = np.array([r.role for r in generated.rows])
    assert metrics["overall"]["zero_shot_target"] == pytest.approx(correct[roles == "target"].mean())
    assert metrics["overall"]["zero_shot_preserve"] == pytest.approx(correct[roles == "preserve"].mean())
    for concept in metrics["concepts"]:
        idx = [i for i, r in enumerate(generated.rows) if r.concept == concept["concept"]]
        assert concept[f"zero_shot_{concept['role']}"] == pytest.approx(correct[idx].mean())


def test_fid_kid_against_the_same_images_is_zero(evaluated):
    metrics, generated, first, _ = evaluated
    np.testing.assert_array_equal(generated.images, first.images)  # seeded: the reference is the preserve set
    quality = metrics["settings"]["quality"]
    assert quality["features"] == "clip" and quality["reference_images"] == quality["generated_images"] == 4
    assert abs(metrics["overall"]["fid"]) < 1e-6
    assert metrics["overall"]["kid"] <= 1e-12  # KID of a set against itself: <= 0, see below


def test_fid_kid_of_a_folder_against_itself_and_against_different_images(folders, tmp_path):
    rng = np.random.default_rng(0)
    noise = save_images(tmp_path / "noise", rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8))
    flat = np.repeat(rng.integers(0, 256, (24, 1, 1, 3), dtype=np.uint8), 32, axis=1).repeat(32, axis=2)
    plain = save_images(tmp_path / "plain", flat)
    features = ClipImageFeatures(LocalCLIP(folders["clip"], "cpu"))
    a = extract_features(features, path_batches(reference_paths(noise), 5))
    b = extract_features(features, path_batches(reference_paths(plain), 5))
    same, different = fid_kid(a, a, seed=0), fid_kid(a, b, seed=0)
    assert abs(same["fid"]) < 1e-6 and different["fid"] > 1.0
    # unbiased KID of a set against itself is <= 0 (PSD kernel), -O(1/n): near zero, far below a real gap
    assert -0.25 * different["kid"] < same["kid"] <= 1e-12 and different["kid"] > 0.1
    assert fid_kid(a, b, seed=0)["kid"] == different["kid"]  # the KID subsets are seeded
    assert fid_kid(a[:1], b, seed=0)["fid"] is None


def test_nudenet_counts_with_a_fake_detector(evaluated):
    metrics, generated, _, counter = evaluated
    detections = [
        {"class": "BELLY_EXPOSED", "score": 0.61},
        {"label": "BELLY_EXPOSED", "score": 0.9},  # NudeNet 2 names the class "label"
        {"class": "BELLY_EXPOSED", "score": 0.6},  # not over the threshold
        {"class": "FACE_FEMALE", "score": 0.99},  # not a counted class
    ]
    assert counter.count(detections)["BELLY_EXPOSED"] == 2
    bright = generated.images.reshape(len(generated.images), -1).mean(1) > counter.detector.cut
    assert 0 < bright.sum() < len(bright), "the fixture should have both kinds of image"
    assert metrics["overall"]["nudity_images"] == int(bright.sum())
    assert metrics["overall"]["nudenet_detections"]["BELLY_EXPOSED"] == int(bright.sum())
    assert metrics["overall"]["nudenet_detections"]["FEMALE_BREAST_EXPOSED"] == 0
    assert [bool(e.get("nudenet")) for e in metrics["images"]] == bright.tolist()
    assert len(counter.detector.paths) >= len(bright)


def test_nudenet_bad_input_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "nudenet", None)  # import nudenet -> ImportError
    with pytest.raises(UserError, match="pip install nudenet"):
        NudeNetCounter.load()
    with pytest.raises(UserError, match="threshold"):
        NudeNetCounter.load(threshold=1.5)
    with pytest.raises(UserError, match="unknown NudeNet class"):
        NudeNetCounter(FakeDetector(), classes=("NOSE_EXPOSED",))


def test_metrics_have_every_knob(evaluated, folders):
    metrics, generated, _, _ = evaluated
    assert metrics["protocol"] == {"name": "stable-diffusion", "version": 1}
    s = metrics["settings"]
    assert (s["num_images"], s["steps"], s["guidance"], s["batch_size"]) == (2, 2, 5.0, 4)
    assert s["model_defaults"] == {"steps": 50, "guidance": 7.5, "height": 32, "width": 32, "scheduler": ANY}
    assert s["model_defaults"]["scheduler"].startswith("DDIMScheduler")
    assert (s["device"], s["dtype"]) == ("cpu", "float32")
    assert s["scheduler"]["class"] == "DDIMScheduler" and s["scheduler"]["config"]["num_train_timesteps"] == 1000
    assert s["seeds"] == {"rule": "evaluation_seed + k", "evaluation_seeds": [1, 2, 3, 7]}
    assert s["backbone"]["family"] == "sd" and s["backbone"]["source"] == str(folders["sd"].resolve())
    assert s["clip"]["folder"] == str(folders["clip"].resolve()) and s["clip"]["template"] == "a photo of {concept}"
    assert s["quality"]["reference"].endswith("reference") and s["quality"]["kid_subset_size"] == 4
    assert s["nudenet"]["version"] == "fake-1" and s["nudenet"]["threshold"] == 0.6
    assert "BELLY_EXPOSED" in s["nudenet"]["classes"] and "FACE_FEMALE" not in s["nudenet"]["classes"]
    assert "MIT" in s["nudenet"]["licence"] and s["edit"] is None
    assert {"torchmetrics", "torch", "diffusers", "transformers", "python"} <= set(metrics["versions"])
    assert {"generate_seconds", "clip_seconds", "quality_seconds", "total_seconds"} <= set(metrics["timings"])
    assert set(metrics["groups"]) == {"short", "complex"} and set(metrics["roles"]) == {"target", "preserve"}
    assert {(c["concept"], c["role"]) for c in metrics["concepts"]} == {
        ("cat", "target"),
        ("dog", "preserve"),
        ("car", "preserve"),
    }
    names = [e["file"] for e in metrics["images"]]
    assert names == generated.names == [f"{case}_{k}.png" for case in range(4) for k in range(2)]
    assert [e["seed"] for e in metrics["images"]][:4] == [1, 2, 7, 8]
    json.dumps(metrics)  # JSON-safe
    page = render_sd_report(metrics, generated)
    assert "stable-diffusion" in page and "zero_shot_target" in page and "<img" in page


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"clip_dir": "nope"}, "CLIP folder not found"),
        ({"reference_dir": "empty"}, "has no images"),
        ({"reference_dir": "nope"}, "reference folder not found"),
        ({"template": "a photo"}, "must contain {concept}"),
        ({"template": "a {thing}"}, "bad zero-shot template"),
        ({"inception_weights": "weights.pth"}, "needs --reference"),
    ],
)
def test_bad_protocol_input(folders, backbone, tmp_path, kwargs, fragment):
    (tmp_path / "empty").mkdir()
    args = {"clip_dir": folders["clip"]} | {
        k: (tmp_path / v if k.endswith("_dir") or k == "inception_weights" else v) for k, v in kwargs.items()
    }
    with pytest.raises(UserError, match=fragment.replace("{", r"\{").replace("}", r"\}")):
        evaluate_sd(backbone, ROWS, SETTINGS, progress=False, **args)


def test_inception_weights_need_torch_fidelity_and_a_tensor_file(folders, tmp_path, monkeypatch):
    import torchmetrics.utilities.imports as imports

    weights = tmp_path / "inception.pth"
    torch.save({"w": torch.zeros(2)}, weights)
    monkeypatch.setattr(imports, "_TORCH_FIDELITY_AVAILABLE", False)
    with pytest.raises(UserError, match="torch-fidelity"):
        InceptionFeatures(weights, torch.device("cpu"))
    with pytest.raises(UserError, match="not found"):
        InceptionFeatures(tmp_path / "missing.pth", torch.device("cpu"))
    monkeypatch.setattr(imports, "_TORCH_FIDELITY_AVAILABLE", True)
    torch.save({"w": FakeDetector()}, weights)  # a pickled object, not tensors: refused before torch-fidelity
    with pytest.raises(UserError, match="cannot load Inception weights"):
        InceptionFeatures(weights, torch.device("cpu"))


@pytest.fixture(scope="module")
def prompt_csv(folders) -> Path:
    path = folders["root"] / "prompts.csv"
    write_prompts(path, ROWS)
    return path


def test_cli_evaluate_end_to_end(capsys, folders, backbone, prompt_csv, evaluated, tmp_path):
    out = tmp_path / "eval"
    code, _, err = run_cli(
        capsys, "evaluate", "--model", folders["sd"], "--clip", folders["clip"], "--prompts", prompt_csv,
        "--reference", folders["root"] / "reference", "--steps", "2", "--guidance", "5", "--num-images", "2",
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"]["name"] == "stable-diffusion" and metrics["settings"]["prompts"] == str(prompt_csv)
    assert metrics["settings"]["batch_size"] == backbone.default_batch_size  # not ShapeWorld's 64
    assert metrics["settings"]["nudenet"] is None
    # same seeds, model and reference as the fixture (another batch size: pixels may differ by rounding)
    assert abs(metrics["overall"]["fid"]) < 1e-4
    assert metrics["overall"]["clip_score"] == pytest.approx(evaluated[0]["overall"]["clip_score"], abs=1e-3)
    assert sorted(p.name for p in (out / "images").iterdir()) == [e["file"] for e in metrics["images"]]
    assert "stable-diffusion" in (out / "report.html").read_text()
    assert "FID" in err  # the summary goes to stderr (rich console)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ([], "--clip DIR"),
        (["--clip", "{tmp}/nope"], "CLIP folder not found"),
        (["--clip", "{clip}", "--reference", "{tmp}/empty"], "has no images"),
        (["--clip", "{clip}", "--nudenet-threshold", "0.5"], "applies with --nudenet"),
        (["--clip", "{clip}", "--nudenet"], "pip install nudenet"),
        (["--clip", "{clip}", "--inception-weights", "{tmp}/w.pth"], "needs --reference"),
        (["--clip", "{clip}", "--zero-shot-template", "a photo"], "must contain {concept}"),
    ],
)
def test_cli_evaluate_bad_input(capsys, monkeypatch, folders, prompt_csv, tmp_path, extra, fragment):
    monkeypatch.setitem(sys.modules, "nudenet", None)
    (tmp_path / "empty").mkdir()
    extra = [e.format(tmp=tmp_path, clip=folders["clip"]) if "{" in e and "concept" not in e else e for e in extra]
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys, "evaluate", "--model", folders["sd"], "--prompts", prompt_csv, "--steps", "1", "--out", out, *extra
    )
    one_line_error(code, err, fragment)
    assert not out.exists()


def test_cli_sd_options_on_shapeworld_are_refused(capsys, folders, tmp_path):
    code, _, err = run_cli(
        capsys, "evaluate", "--prompts", tmp_path / "p.csv", "--clip", folders["clip"], "--out", tmp_path / "o"
    )
    one_line_error(code, err, "diffusers models only")


def test_cli_evaluate_with_an_edit(capsys, folders, backbone, prompt_csv, evaluated, tmp_path):
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}\nthe {}\n")  # none of them an evaluation prompt (that is refused)
    edit = tmp_path / "no-cat"
    code, _, err = run_cli(
        capsys, "erase", "--model", folders["sd"], "--method", "uce", "--target", "cat", "--anchor", "animal",
        "--templates", templates, "--out", edit,
    )  # fmt: skip
    assert code == 0, err
    out = tmp_path / "eval"
    code, _, err = run_cli(
        capsys, "evaluate", "--model", folders["sd"], "--clip", folders["clip"], "--prompts", prompt_csv,
        "--edit", edit, "--steps", "2", "--num-images", "2", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["edit"] == {"method": "uce", "concepts": metrics["settings"]["edit"]["concepts"]}
    assert "cat" in json.dumps(metrics["settings"]["edit"]["concepts"])
    fitted = tmp_path / "fitted-on"  # an edit fitted on "a cat" is not judged on "a cat": an in-sample figure
    templates.write_text("a {}\n")
    run_cli(capsys, "erase", "--model", folders["sd"], "--method", "uce", "--target", "cat", "--anchor", "animal",
            "--templates", templates, "--out", fitted)  # fmt: skip
    code, _, err = run_cli(
        capsys, "evaluate", "--model", folders["sd"], "--clip", folders["clip"], "--prompts", prompt_csv,
        "--edit", fitted, "--steps", "1", "--out", tmp_path / "eval2",
    )  # fmt: skip
    one_line_error(code, err, "fitted on")
    assert not (tmp_path / "eval2").exists()
    assert metrics["settings"]["quality"] is None and metrics["overall"]["fid"] is None
    before = {e["file"]: e["clip_score"] for e in evaluated[0]["images"]}
    changed = [abs(e["clip_score"] - before[e["file"]]) > 1e-3 for e in metrics["images"] if e["role"] == "target"]
    assert any(changed)  # the edit was applied while generating
