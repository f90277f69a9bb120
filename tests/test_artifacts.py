"""Edit artifacts on tiny random SD 1.x / SDXL pipelines: round trip, apply / remove, export, refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import erasekit.artifacts.artifact as artifact_module
from erasekit.artifacts import (
    FORMAT_VERSION,
    Artifact,
    apply_artifact,
    build_artifact,
    editable_linears,
    export_artifact,
    load_artifact,
    remove_artifact,
    save_artifact,
    tensor_sha256,
)
from erasekit.backbones.loader import load_backbone
from erasekit.errors import UserError
from tiny_pipelines import build_sd, build_sdxl

PROMPTS, SEEDS, STEPS = ["a cat", "a dog"], [0, 1], 2
CONCEPTS = {"targets": ["cat"], "anchors": ["animal"], "preserve": ["dog"]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipelines")
    return {
        "sd": build_sd(root / "sd"),
        "sd_other": build_sd(root / "sd_other", seed=1),  # same architecture, other weights
        "sdxl": build_sdxl(root / "sdxl"),
    }


def edit_names(backbone) -> list[str]:
    """One to_k and one to_v projector, and the first text layer."""
    projectors = sorted(backbone.projectors())
    to_k = next(n for n in projectors if n.endswith("to_k"))
    to_v = next(n for n in projectors if n.endswith("to_v"))
    return [to_k, to_v, backbone.text_layers()[0][0]]


def make_artifact(backbone, seed: int = 0) -> Artifact:
    """An edit adding a random delta (half the weight's std) to two projectors and one text layer."""
    generator = torch.Generator().manual_seed(seed)
    linears = editable_linears(backbone)
    new_weights = {}
    for name in edit_names(backbone):
        weight = linears[name].weight.detach()
        new_weights[name] = weight + 0.5 * weight.std() * torch.randn(weight.shape, generator=generator)
    return build_artifact(backbone, "test", {"alpha": 1.0}, CONCEPTS, new_weights, {"residual": [0.5, 0.25]})


def snapshot(backbone) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().clone() for name, m in editable_linears(backbone).items()}


def assert_unchanged(backbone, before: dict[str, torch.Tensor]) -> None:
    after = snapshot(backbone)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)


def images(backbone) -> np.ndarray:
    return backbone.generate(PROMPTS, SEEDS, steps=STEPS)


# --- round trip, apply / remove, export -----------------------------------------------------------


@pytest.mark.parametrize("variant", ["sd", "sdxl"])
def test_round_trip_apply_remove_export(variant: str, folders: dict[str, Path], tmp_path: Path) -> None:
    backbone = load_backbone(folders[variant])
    artifact = make_artifact(backbone)
    assert set(artifact.weights) == {f"{n}.weight" for n in edit_names(backbone)}
    assert artifact.base == backbone.identity() and artifact.versions["torch"] == torch.__version__

    saved = save_artifact(artifact, tmp_path / "edit")
    assert sorted(p.name for p in saved.iterdir()) == ["manifest.json", "tensors.safetensors"]
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["created"].endswith("+00:00")
    loaded = load_artifact(saved)
    assert (loaded.method, loaded.config, loaded.concepts, loaded.base) == (
        "test",
        {"alpha": 1.0},
        CONCEPTS,
        artifact.base,
    )
    assert loaded.metrics == {"residual": [0.5, 0.25]} and loaded.versions == artifact.versions
    assert loaded.original_sha256 == artifact.original_sha256
    assert loaded.weights.keys() == artifact.weights.keys()
    assert all(torch.equal(loaded.weights[k], artifact.weights[k]) for k in artifact.weights)

    base_images, (base_states, _) = images(backbone), backbone.encode(PROMPTS)
    base_weights = snapshot(backbone)
    applied = apply_artifact(backbone, loaded)
    linears = editable_linears(backbone)
    assert all(torch.equal(linears[k.removesuffix(".weight")].weight, w) for k, w in loaded.weights.items())
    edited_images, (edited_states, _) = images(backbone), backbone.encode(PROMPTS)
    assert not np.array_equal(edited_images, base_images)
    assert not torch.allclose(edited_states, base_states)  # a text layer is edited
    with pytest.raises(UserError, match="already applied"):
        apply_artifact(backbone, loaded)

    remove_artifact(backbone, applied)
    assert_unchanged(backbone, base_weights)
    assert np.array_equal(images(backbone), base_images)
    assert torch.equal(backbone.encode(PROMPTS)[0], base_states)

    exported = export_artifact(backbone, loaded, tmp_path / "exported")
    assert_unchanged(backbone, base_weights)  # the in-memory model is back to the base
    edit_info = json.loads((exported / "erasekit_edit.json").read_text())
    assert edit_info["method"] == "test" and edit_info["original_sha256"] == artifact.original_sha256
    edited_backbone = load_backbone(exported)
    assert edited_backbone.family == backbone.family
    exported_linears = editable_linears(edited_backbone)
    assert all(torch.equal(exported_linears[k.removesuffix(".weight")].weight, w) for k, w in loaded.weights.items())
    assert np.abs(edited_backbone.generate(PROMPTS, SEEDS, steps=STEPS).astype(int) - edited_images).max() <= 1


def test_tensor_sha256() -> None:
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert tensor_sha256(t) == tensor_sha256(t.clone())
    assert tensor_sha256(t.T) == tensor_sha256(t.T.contiguous())  # layout does not matter
    assert tensor_sha256(t) != tensor_sha256(t.reshape(4, 3))  # shape does
    assert tensor_sha256(t) != tensor_sha256(t.double())  # dtype does
    changed = t.clone()
    changed[2, 3] += 1
    assert tensor_sha256(t) != tensor_sha256(changed)
    assert tensor_sha256(t.bfloat16()) != tensor_sha256(t.half())


# --- refusals -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd(folders: dict[str, Path]):
    return load_backbone(folders["sd"])


@pytest.fixture(scope="module")
def sd_artifact(sd) -> Artifact:
    return make_artifact(sd)


def test_refuses_a_different_base_model(sd_artifact: Artifact, folders: dict[str, Path]) -> None:
    other = load_backbone(folders["sd_other"])
    before = snapshot(other)
    with pytest.raises(
        UserError, match=r"artifact was made for a different base model \(.*\): weight .* does not match"
    ):
        apply_artifact(other, sd_artifact)
    assert_unchanged(other, before)


def test_checks_every_weight_before_changing_any(sd, sd_artifact: Artifact) -> None:
    last = list(sd_artifact.weights)[-1]
    tampered = Artifact(**{**vars(sd_artifact), "original_sha256": {**sd_artifact.original_sha256, last: "0" * 64}})
    before = snapshot(sd)
    with pytest.raises(UserError, match=f"weight {last} does not match"):
        apply_artifact(sd, tampered)
    assert_unchanged(sd, before)  # the weights checked before the bad one were not replaced either


def test_refuses_another_family(sd_artifact: Artifact, folders: dict[str, Path]) -> None:
    sdxl = load_backbone(folders["sdxl"])
    before = snapshot(sdxl)
    with pytest.raises(UserError, match="made for a sd model, not this sdxl model"):
        apply_artifact(sdxl, sd_artifact)
    assert_unchanged(sdxl, before)


def test_refuses_missing_modules_and_other_shapes(sd, sd_artifact: Artifact) -> None:
    key = list(sd_artifact.weights)[0]
    missing = Artifact(**{**vars(sd_artifact), "weights": {**sd_artifact.weights, "unet.nope.weight": torch.zeros(1)}})
    with pytest.raises(UserError, match="no module unet.nope here"):
        apply_artifact(sd, missing)
    reshaped = Artifact(**{**vars(sd_artifact), "weights": {**sd_artifact.weights, key: torch.zeros(3, 5)}})
    with pytest.raises(UserError, match=rf"weight {key} has shape .* here, \(3, 5\) in the artifact"):
        apply_artifact(sd, reshaped)


def test_corrupted_tensors_file(sd_artifact: Artifact, tmp_path: Path) -> None:
    folder = save_artifact(sd_artifact, tmp_path / "edit")
    tensors = folder / "tensors.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    data[len(data) // 2] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupted"):
        load_artifact(folder)


def rewrite_manifest(folder: Path, **changes) -> None:
    path = folder / "manifest.json"
    manifest = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps({k: v for k, v in manifest.items() if v is not None}))


def test_unreadable_tensors_file_is_a_user_error(sd_artifact: Artifact, tmp_path: Path) -> None:
    folder = save_artifact(sd_artifact, tmp_path / "edit")
    garbage = b"\x10\x00\x00\x00\x00\x00\x00\x00not a header"
    (folder / "tensors.safetensors").write_bytes(garbage)
    rewrite_manifest(folder, tensors_sha256=hashlib.sha256(garbage).hexdigest())
    with pytest.raises(UserError, match="could not read tensors.safetensors"):
        load_artifact(folder)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_folder", "edit artifact folder not found"),
        ("no_manifest", r"not an edit artifact \(no manifest.json\)"),
        ("no_tensors", r"incomplete edit artifact \(no tensors.safetensors\)"),
        ("bad_json", "corrupted manifest.json"),
        ("list_json", "corrupted manifest.json"),
        ("no_method", "manifest.json lacks method"),
        ("future_version", "unsupported artifact format_version 99"),
        ("other_keys", "name different weights"),
    ],
)
def test_bad_artifact_folders(sd_artifact: Artifact, tmp_path: Path, damage: str, message: str) -> None:
    folder = save_artifact(sd_artifact, tmp_path / "edit")
    manifest = folder / "manifest.json"
    if damage == "no_folder":
        folder = tmp_path / "nope"
    elif damage == "no_manifest":
        manifest.unlink()
    elif damage == "no_tensors":
        (folder / "tensors.safetensors").unlink()
    elif damage == "bad_json":
        manifest.write_text("{not json")
    elif damage == "list_json":
        manifest.write_text("[1, 2]")
    elif damage == "no_method":
        rewrite_manifest(folder, method=None)
    elif damage == "future_version":
        rewrite_manifest(folder, format_version=99)
    elif damage == "other_keys":
        shas = dict(sd_artifact.original_sha256)
        shas["unet.extra.weight"] = shas.popitem()[1]
        rewrite_manifest(folder, original_sha256=shas)
    with pytest.raises(UserError, match=message) as info:
        load_artifact(folder)
    assert "\n" not in str(info.value)


def test_save_is_atomic(sd_artifact: Artifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save_file = artifact_module.save_file

    def write_then_fail(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)
        raise OSError("disk full")

    monkeypatch.setattr(artifact_module, "save_file", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_artifact(sd_artifact, tmp_path / "edit")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary folder is left


def test_export_refuses_shapeworld(tmp_path: Path) -> None:
    shapeworld = SimpleNamespace(family="shapeworld", identity=lambda: {"family": "shapeworld", "source": "tiny"})
    artifact = Artifact("test", {}, CONCEPTS, shapeworld.identity(), {}, {})
    with pytest.raises(UserError, match="export writes a diffusers folder; ShapeWorld edits are used with --edit"):
        export_artifact(shapeworld, artifact, tmp_path / "exported")
    assert not (tmp_path / "exported").exists()
