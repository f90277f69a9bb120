"""Edit artifacts on tiny random SD 1.x / SDXL pipelines: round trip, apply / remove, export, refusals."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import safetensors.torch
import torch

import erasekit.artifacts.apply as apply_module
import erasekit.artifacts.store as store_module
from erasekit.artifacts import (
    FORMAT_VERSION,
    MODULE_SEP,
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
from erasekit.artifacts.manifest import MANIFEST_SHA256, manifest_sha256
from erasekit.backbones.loader import load_backbone
from erasekit.errors import UserError
from erasekit.methods.etc.keyed import ConceptMemory, KeyedEraser
from erasekit.methods.etc.moeraser import MoEraser, MoEraserConfig
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
    assert "modules" not in manifest  # a weights-only edit writes the same manifest as before modules existed
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
    assert tensor_sha256(t) == tensor_sha256(t.double()) == tensor_sha256(t.half())  # float32 values are hashed
    changed = t.clone()
    changed[2, 3] += 1
    assert tensor_sha256(t) != tensor_sha256(changed)
    fine = t / 3
    assert tensor_sha256(fine.bfloat16()) != tensor_sha256(fine.half()) != tensor_sha256(fine)  # rounded values


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


def read_manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def rewrite_manifest(folder: Path, **changes) -> None:
    """Change manifest fields (None: drop the field) and nothing else, as a hand edit would."""
    manifest = {**read_manifest(folder), **changes}
    (folder / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if v is not None}))


def resign(folder: Path, manifest: dict | None = None, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Rewrite the artifact's files (the given manifest or tensors, else the folder's) with hashes that agree, as
    erasekit saves them, so that only the finer checks can object."""
    manifest = read_manifest(folder) if manifest is None else manifest
    path = folder / "tensors.safetensors"
    tensors = safetensors.torch.load_file(path) if tensors is None else tensors
    safetensors.torch.save_file(tensors, str(path), {"format": "pt", MANIFEST_SHA256: manifest_sha256(manifest)})
    signed = {**manifest, "tensors_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(signed))


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
        ("bad_json", r"corrupted edit artifact \(manifest.json is not strict JSON: Expecting"),
        ("list_json", r"corrupted edit artifact \(manifest.json is not a JSON object\)"),
        ("no_method", r"corrupted edit artifact \(manifest field 'method' is missing\): .*manifest.json"),
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
        resign(folder, {**read_manifest(folder), "original_sha256": shas})
    with pytest.raises(UserError, match=message) as info:
        load_artifact(folder)
    assert "\n" not in str(info.value)


def test_save_is_atomic(sd_artifact: Artifact, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save_file = store_module.save_file

    def write_then_fail(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)
        raise OSError("disk full")

    monkeypatch.setattr(store_module, "save_file", write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_artifact(sd_artifact, tmp_path / "edit")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary folder is left


def test_export_refuses_shapeworld(tmp_path: Path) -> None:
    shapeworld = SimpleNamespace(family="shapeworld", identity=lambda: {"family": "shapeworld", "source": "tiny"})
    artifact = Artifact("test", {}, CONCEPTS, shapeworld.identity(), {}, {})
    with pytest.raises(UserError, match="export writes a diffusers folder; ShapeWorld edits are used with --edit"):
        export_artifact(shapeworld, artifact, tmp_path / "exported")
    assert not (tmp_path / "exported").exists()


# --- MoEraser modules (ETC): added to projector outputs by a hook ---------------------------------

SMALL = MoEraserConfig(experts=4, hidden=8, top_k=2)
ONE = (["a cat"], [0])


def module_names(backbone) -> list[str]:
    """One to_k and one to_v projector (cross-attention, attn2)."""
    return edit_names(backbone)[:2]


def make_erasers(backbone, seed: int = 0) -> dict[str, MoEraser]:
    """Erasers for two projectors with random (non-zero) router and output projections."""
    generator = torch.Generator().manual_seed(seed)
    linears = editable_linears(backbone)
    erasers = {}
    for name in module_names(backbone):
        eraser = MoEraser(linears[name].in_features, linears[name].out_features, SMALL)
        with torch.no_grad():
            for p in (eraser.router.weight, eraser.router.bias, eraser.w_out, eraser.b_out):
                p.copy_(torch.randn(p.shape, generator=generator))
        erasers[name] = eraser
    return erasers


def noisy_weights(backbone, names: list[str], seed: int = 1) -> dict[str, torch.Tensor]:
    """NIR-like corrupted weights W + noise (the noise's std is the weight's std)."""
    generator = torch.Generator().manual_seed(seed)
    linears = editable_linears(backbone)
    return {n: (w := linears[n].weight.detach()) + w.std() * torch.randn(w.shape, generator=generator) for n in names}


def module_artifact(backbone, erasers: dict[str, MoEraser], weights: dict | None = None) -> Artifact:
    return build_artifact(backbone, "etc", {"k": 2}, CONCEPTS, weights or {}, {}, modules=erasers)


def one_image(backbone) -> np.ndarray:
    return backbone.generate(*ONE, steps=STEPS)


def assert_detached(backbone) -> None:
    """No hook and no attachment marker is left on any editable linear module."""
    for linear in editable_linears(backbone).values():
        assert not linear._forward_hooks and not hasattr(linear, apply_module.ATTACHED)


def test_module_artifact_round_trip_apply_remove(folders: dict[str, Path], tmp_path: Path) -> None:
    backbone = load_backbone(folders["sd"])
    erasers = make_erasers(backbone)
    names = module_names(backbone)
    linears = editable_linears(backbone)
    artifact = module_artifact(backbone, erasers)
    assert artifact.weights == {} and artifact.modules == erasers
    assert artifact.original_sha256 == {f"{n}.weight": tensor_sha256(linears[n].weight) for n in names}

    saved = save_artifact(artifact, tmp_path / "edit")
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["modules"] == {
        n: {"kind": "moeraser", "d_in": e.d_in, "d_out": e.d_out, "config": asdict(SMALL)} for n, e in erasers.items()
    }
    stored = safetensors.torch.load_file(saved / "tensors.safetensors")
    assert set(stored) == {f"{n}{MODULE_SEP}eraser.{p}" for n, e in erasers.items() for p in e.state_dict()}
    loaded = load_artifact(saved)
    assert loaded.weights == {} and loaded.original_sha256 == artifact.original_sha256
    assert loaded.modules.keys() == erasers.keys()
    for name, eraser in erasers.items():
        assert loaded.modules[name].config == SMALL and (loaded.modules[name].d_in, loaded.modules[name].d_out) == (
            eraser.d_in,
            eraser.d_out,
        )
        state, state_loaded = eraser.state_dict(), loaded.modules[name].state_dict()
        assert state.keys() == state_loaded.keys() and all(torch.equal(state[k], state_loaded[k]) for k in state)

    weights = snapshot(backbone)
    base = one_image(backbone)
    applied = apply_artifact(backbone, loaded)
    assert_unchanged(backbone, weights)  # a module-only edit leaves the weights alone
    edited = one_image(backbone)
    assert not np.array_equal(edited, base)
    with pytest.raises(UserError, match="already applied"):
        apply_artifact(backbone, loaded)
    with pytest.raises(UserError, match="already applied"):
        apply_artifact(backbone, artifact)  # another artifact object: the marker on the projector tells
    remove_artifact(backbone, applied)
    assert_detached(backbone)
    assert np.array_equal(one_image(backbone), base)

    applied = apply_artifact(backbone, artifact)  # the in-memory artifact gives the same images
    assert np.array_equal(one_image(backbone), edited)
    remove_artifact(backbone, applied)

    removed = apply_artifact(backbone, loaded, modules=False)  # module removal, no replaced weights: the base
    assert not removed.hooks
    assert_detached(backbone)
    assert np.array_equal(one_image(backbone), base)
    remove_artifact(backbone, removed)
    assert_unchanged(backbone, weights)


def test_module_removal_with_replaced_weights(folders: dict[str, Path], tmp_path: Path) -> None:
    backbone = load_backbone(folders["sd"])
    names = module_names(backbone)
    nir = load_artifact(
        save_artifact(
            module_artifact(backbone, make_erasers(backbone), noisy_weights(backbone, names)), tmp_path / "nir"
        )
    )
    assert set(nir.weights) == set(nir.original_sha256) == {f"{n}.weight" for n in names}
    weights = snapshot(backbone)
    base = one_image(backbone)
    applied = apply_artifact(backbone, nir)
    full = one_image(backbone)
    remove_artifact(backbone, applied)
    assert_unchanged(backbone, weights)
    assert_detached(backbone)

    removed = apply_artifact(backbone, nir, modules=False)
    assert not removed.hooks
    stripped = one_image(backbone)
    with pytest.raises(UserError, match="already applied"):
        apply_artifact(backbone, nir)  # the corrupted weights are in place
    remove_artifact(backbone, removed)
    assert_unchanged(backbone, weights)
    assert np.array_equal(one_image(backbone), base)
    assert not np.array_equal(stripped, base) and not np.array_equal(stripped, full)
    assert not np.array_equal(full, base)


def test_projector_output_is_weight_plus_eraser(sd) -> None:
    erasers = make_erasers(sd)
    artifact = module_artifact(sd, erasers)
    linears = editable_linears(sd)
    generator = torch.Generator().manual_seed(3)
    inputs = {name: torch.randn(2, 5, linears[name].in_features, generator=generator) for name in erasers}
    with torch.no_grad():
        plain = {name: linears[name](x) for name, x in inputs.items()}
        applied = apply_artifact(sd, artifact)
        try:
            for name, x in inputs.items():
                linear = linears[name]
                by_hand = torch.nn.functional.linear(x, linear.weight, linear.bias) + erasers[name].eval()(x)
                assert torch.allclose(linear(x), by_hand, rtol=0, atol=1e-6)
                assert not torch.allclose(linear(x), plain[name], atol=1e-3)
                assert not any(p.requires_grad for p in erasers[name].parameters())
        finally:
            remove_artifact(sd, applied)
        assert all(torch.equal(linears[name](x), plain[name]) for name, x in inputs.items())


class WithDelta(torch.nn.Module):
    """A linear module followed by an eraser, as an explicit module (the reference for the hook)."""

    def __init__(self, linear: torch.nn.Linear, eraser: MoEraser) -> None:
        super().__init__()
        self.linear, self.eraser = linear, eraser

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.eraser(x)


def test_eraser_hook_on_to_k_inside_a_diffusers_attention_block(sd) -> None:
    from diffusers.models.attention_processor import Attention

    name = next(n for n in sorted(sd.projectors()) if n.endswith("attn2.to_k"))
    attn = sd.pipe.unet.get_submodule(name.removeprefix("unet.").removesuffix(".to_k"))
    assert isinstance(attn, Attention)
    generator = torch.Generator().manual_seed(5)
    hidden = torch.randn(2, 6, attn.to_q.in_features, generator=generator)
    context = torch.randn(2, 7, attn.to_k.in_features, generator=generator)
    fresh = MoEraser(attn.to_k.in_features, attn.to_k.out_features, SMALL)  # Δ ≡ 0 at initialisation
    randomised = make_erasers(sd)[name]
    with torch.no_grad():
        reference = attn(hidden, encoder_hidden_states=context)
        applied = apply_artifact(sd, module_artifact(sd, {name: fresh}))
        try:
            assert torch.equal(attn(hidden, encoder_hidden_states=context), reference)
        finally:
            remove_artifact(sd, applied)
        linear = attn.to_k
        attn.to_k = WithDelta(linear, randomised.eval())
        try:
            expected = attn(hidden, encoder_hidden_states=context)
        finally:
            attn.to_k = linear
        applied = apply_artifact(sd, module_artifact(sd, {name: randomised}))
        try:
            edited = attn(hidden, encoder_hidden_states=context)
        finally:
            remove_artifact(sd, applied)
    assert not torch.allclose(edited, reference, atol=1e-3)
    assert torch.allclose(edited, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("drop", "has MoEraser tensors .* expected"),
        ("extra", "has MoEraser tensors .* expected"),
        ("reshape", r"MoEraser tensor .*::eraser.w_gate is torch.float32 \(32, 39\), expected shape \(32, 40\)"),
        ("integer", r"tensor '.*::eraser.b_out' is torch.int64, an artifact holds only float16, bfloat16, float32"),
        ("half", "MoEraser tensors for .* mix dtypes torch.float16, torch.float32"),
        ("orphan", "has tensor 'unet.nope::eraser.w_gate' for no module of manifest.json"),
        ("not_eraser", "for no module of manifest.json"),
        ("unknown_kind", r"manifest field \"modules\['.*'\].kind\" must be one of 'moeraser', 'keyed'"),
        ("unknown_field", r"manifest field \"modules\['.*'\].config.rank\" is not a field erasekit writes"),
        ("bad_type", r"config.hidden\" must be an integer in \[1, 2147483647\]"),
        ("bad_top_k", r"bad MoEraser config \(top_k must be in \[1, experts\]"),
        ("bad_dims", r"d_in\" must be an integer in \[1, 2147483647\]"),
        ("not_hashed", "name different weights"),
        ("modules_list", "manifest field 'modules' must be an object"),
    ],
)
def test_bad_module_tensors_or_entries(sd, tmp_path: Path, damage: str, message: str) -> None:
    artifact = module_artifact(sd, make_erasers(sd))
    folder = save_artifact(artifact, tmp_path / "edit")
    tensors = safetensors.torch.load_file(folder / "tensors.safetensors")
    manifest = read_manifest(folder)
    entries = manifest["modules"]
    name = module_names(sd)[0]
    key = f"{name}{MODULE_SEP}eraser."
    if damage == "drop":
        del tensors[key + "w_up"]
    elif damage == "extra":
        tensors[key + "w_extra"] = torch.zeros(2)
    elif damage == "reshape":
        tensors[key + "w_gate"] = tensors[key + "w_gate"][:, :-1].contiguous()
    elif damage == "integer":
        tensors[key + "b_out"] = tensors[key + "b_out"].long()
    elif damage == "half":
        tensors[key + "w_out"] = tensors[key + "w_out"].half()
    elif damage == "orphan":
        tensors[f"unet.nope{MODULE_SEP}eraser.w_gate"] = tensors[key + "w_gate"].clone()
    elif damage == "not_eraser":
        tensors[f"{name}{MODULE_SEP}lora.A"] = torch.zeros(2)
    elif damage == "unknown_kind":
        entries[name]["kind"] = "lora"
    elif damage == "unknown_field":
        entries[name]["config"]["rank"] = 4
    elif damage == "bad_type":
        entries[name]["config"]["hidden"] = "8"
    elif damage == "bad_top_k":
        entries[name]["config"]["top_k"] = 9
    elif damage == "bad_dims":
        entries[name]["d_in"] = 0
    elif damage == "not_hashed":
        manifest["original_sha256"] = {k: v for k, v in artifact.original_sha256.items() if name not in k}
    elif damage == "modules_list":
        entries = list(entries)
    resign(folder, {**manifest, "modules": entries}, tensors)
    with pytest.raises(UserError, match=message) as info:
        load_artifact(folder)
    assert "\n" not in str(info.value) and str(folder) in str(info.value)


def test_changed_module_tensor_is_caught_by_the_file_hash(sd, tmp_path: Path) -> None:
    folder = save_artifact(module_artifact(sd, make_erasers(sd)), tmp_path / "edit")
    path = folder / "tensors.safetensors"
    tensors = safetensors.torch.load_file(path)
    key = next(k for k in tensors if k.endswith("::eraser.w_out"))
    tensors[key] = tensors[key] + 1
    safetensors.torch.save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(UserError, match="corrupted"):
        load_artifact(folder)


def test_build_refuses_unknown_or_mismatched_modules(sd) -> None:
    erasers = make_erasers(sd)
    name = module_names(sd)[0]
    with pytest.raises(ValueError, match="unet.nope is not an editable linear module"):
        module_artifact(sd, {"unet.nope": erasers[name]})
    with pytest.raises(ValueError, match=f"{name}::x is not an editable linear module"):
        module_artifact(sd, {f"{name}::x": erasers[name]})
    linear = editable_linears(sd)[name]
    wrong = MoEraser(linear.in_features + 1, linear.out_features, SMALL)
    with pytest.raises(ValueError, match=f"MoEraser for {name} maps {linear.in_features + 1} -> "):
        module_artifact(sd, {name: wrong})
    with pytest.raises(ValueError, match="not a MoEraser"):
        module_artifact(sd, {name: torch.nn.Linear(linear.in_features, linear.out_features)})


def test_module_artifact_refuses_a_different_base_model(sd, folders: dict[str, Path]) -> None:
    artifact = module_artifact(sd, make_erasers(sd))
    other = load_backbone(folders["sd_other"])
    before = snapshot(other)
    with pytest.raises(UserError, match=r"different base model \(.*\): weight .*attn2.to_k.weight does not match"):
        apply_artifact(other, artifact)
    with pytest.raises(UserError, match="different base model"):
        apply_artifact(other, artifact, modules=False)
    assert_unchanged(other, before)
    assert_detached(other)


def test_export_refuses_module_artifacts(sd, tmp_path: Path) -> None:
    weights = snapshot(sd)
    artifact = module_artifact(sd, make_erasers(sd), noisy_weights(sd, module_names(sd)))
    with pytest.raises(UserError, match="carries MoEraser modules .*; use it with --edit"):
        export_artifact(sd, artifact, tmp_path / "exported")
    assert not (tmp_path / "exported").exists()
    assert_unchanged(sd, weights)
    assert_detached(sd)


# --- tampering, bad values and non-finite erasures: refused in one line ---------------------------


def assert_refused(folder: Path, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        load_artifact(folder)
    assert "\n" not in str(info.value)


def test_an_edited_manifest_is_detected(sd_artifact: Artifact, tmp_path: Path) -> None:
    folder = save_artifact(sd_artifact, tmp_path / "edit")
    rewrite_manifest(folder, concepts={**CONCEPTS, "targets": ["dog"]})  # still a well-formed manifest
    assert_refused(folder, r"manifest.json was changed after it was saved: .*: .*manifest.json$")


def test_edited_tensors_are_detected_even_with_the_manifest_hash_fixed(sd_artifact: Artifact, tmp_path: Path) -> None:
    folder = save_artifact(sd_artifact, tmp_path / "edit")
    path = folder / "tensors.safetensors"
    tensors = safetensors.torch.load_file(path)
    key = next(iter(tensors))
    tensors[key] = tensors[key] * 2
    safetensors.torch.save_file(tensors, str(path), {"format": "pt"})  # another tool: no hash of the manifest
    rewrite_manifest(folder, tensors_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert_refused(folder, r"records no hash of manifest.json.*re-run `erasekit erase`")
    safetensors.torch.save_file(tensors, str(path), {"format": "pt", MANIFEST_SHA256: "0" * 64})
    rewrite_manifest(folder, tensors_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert_refused(folder, "manifest.json was changed after it was saved")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.long(), r"is torch.int64, an artifact holds only float16, bfloat16, float32, float64"),
        (lambda w: w > 0, "is torch.bool"),
        (lambda w: w.index_fill(0, torch.tensor([0]), math.nan), "holds NaN or infinite values"),
        (lambda w: w.index_fill(0, torch.tensor([1]), -math.inf), "holds NaN or infinite values"),
        (lambda w: w.flatten(), r"has shape \(\d+,\), expected a matrix"),
    ],
    ids=["integer", "bool", "nan", "inf", "vector"],
)
def test_bad_weights_are_refused(sd_artifact: Artifact, tmp_path: Path, change, message: str) -> None:
    folder = save_artifact(sd_artifact, tmp_path / "edit")
    key = next(iter(sd_artifact.weights))
    resign(folder, tensors={**sd_artifact.weights, key: change(sd_artifact.weights[key]).contiguous()})
    assert_refused(folder, message)


def keyed_artifact(backbone) -> Artifact:
    """A keyed eraser on one projector: two distributions of one key each, radius 1."""
    name = module_names(backbone)[0]
    linear = editable_linears(backbone)[name]
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(2, linear.in_features, generator=generator)
    values = torch.randn(2, linear.in_features, generator=generator)
    memory = ConceptMemory(torch.eye(linear.in_features), means, means[:, None], values, 1.0, 2, residual=0.5)
    eraser = KeyedEraser(memory, linear.in_features, linear.out_features)
    return build_artifact(backbone, "etc", {}, CONCEPTS, {}, {}, modules={name: eraser})


@pytest.mark.parametrize(
    ("buffer", "value", "message"),
    [
        ("residual", 1.5, r"memory buffer ::memory.residual must be in \[0, 1\]"),
        ("residual", -0.1, r"memory buffer ::memory.residual must be in \[0, 1\]"),
        ("residual", math.nan, "tensor '::memory.residual' holds NaN or infinite values"),
        ("threshold", math.inf, "tensor '::memory.threshold' holds NaN or infinite values"),
        ("threshold", -1.0, "::memory.threshold must be at least 0"),
        ("concept", 2.0, r"::memory.concept must be whole numbers in \[0, distributions\)"),
        ("concept", 0.5, r"::memory.concept must be whole numbers in \[0, distributions\)"),
    ],
)
def test_memory_buffers_out_of_range_are_refused(sd, tmp_path: Path, buffer: str, value: float, message: str):
    folder = save_artifact(keyed_artifact(sd), tmp_path / "edit")
    assert load_artifact(folder).modules  # the untouched artifact loads
    tensors = safetensors.torch.load_file(folder / "tensors.safetensors")
    key = f"::memory.{buffer}"
    tensors[key] = tensors[key].clone().fill_(value) if buffer != "concept" else torch.tensor([0.0, value])
    resign(folder, tensors=tensors)
    assert_refused(folder, message)


def test_a_non_finite_erasure_is_not_saved(sd, sd_artifact: Artifact, tmp_path: Path) -> None:
    key = next(iter(sd_artifact.weights))
    name, nan_weight = key.removesuffix(".weight"), sd_artifact.weights[key].clone()
    nan_weight[0, 0] = math.nan
    message = rf"non-finite weights \(maps: {re.escape(name)}\); nothing was saved — check the method's settings"
    with pytest.raises(UserError, match=message):
        build_artifact(sd, "test", {}, CONCEPTS, {name: nan_weight}, {})
    with pytest.raises(UserError, match=message):
        save_artifact(Artifact(**{**vars(sd_artifact), "weights": {key: nan_weight}}), tmp_path / "new" / "edit")
    erasers = make_erasers(sd)
    module = module_names(sd)[1]
    erasers[module].w_out.data[0, 0] = math.inf
    with pytest.raises(UserError, match=rf"non-finite weights \(maps: {re.escape(module)}\)"):
        build_artifact(sd, "etc", {}, CONCEPTS, {}, {}, modules=erasers)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the parent folder


def test_a_manifest_that_would_not_load_is_not_saved(sd_artifact: Artifact, tmp_path: Path) -> None:
    metrics = {"stages": [{"stage": "projectors", "residual": math.nan}]}  # NaN is written as null
    with pytest.raises(UserError, match=r"manifest field 'metrics.stages\[0\].residual' must be a finite number"):
        save_artifact(Artifact(**{**vars(sd_artifact), "metrics": metrics}), tmp_path / "edit")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ({"stage": "projectors"}, r"manifest field 'metrics.stages' must be a list"),
        ([{"stage": "projectors", "seconds": "fast"}], r"'metrics.stages\[0\].seconds' must be a finite number >= 0"),
        ([{"stage": "projectors", "gap": -1.0}], r"'metrics.stages\[0\].gap' must be a finite number >= 0"),
        ([{"stage": "projectors", "maps": 1.5}], r"'metrics.stages\[0\].maps' must be an integer in \[0, "),
        ([{"seconds": 1.0}], r"'metrics.stages\[0\].stage' is missing"),
        (["projectors"], r"'metrics.stages\[0\]' must be an object"),
    ],
    ids=["object", "text_seconds", "negative_gap", "fractional_maps", "no_name", "not_a_row"],
)
def test_malformed_stages_are_refused_at_load(sd_artifact: Artifact, tmp_path: Path, stages, message: str) -> None:
    folder = save_artifact(sd_artifact, tmp_path / "edit")
    resign(folder, {**read_manifest(folder), "metrics": {"seconds": 1.0, "stages": stages}})
    assert_refused(folder, message)


def test_deeply_nested_json_is_refused(sd_artifact: Artifact, tmp_path: Path) -> None:
    folder = save_artifact(sd_artifact, tmp_path / "edit")
    text = (folder / "manifest.json").read_text()
    deep = "[" * 100_000 + "]" * 100_000  # RecursionError in the json module
    (folder / "manifest.json").write_text(text.replace('"config": {', f'"config": {{"deep": {deep}, ', 1))
    assert_refused(folder, r"manifest.json is nested too deeply")
    resign(folder, {**json.loads(text), "config": {"deep": json.loads("[" * 40 + "]" * 40)}})  # parses, too deep
    assert_refused(folder, r"manifest.json is nested too deeply \(more than 32 levels\)")


# --- precision: an edit made in one precision applies to a base loaded in another ----------------------------


def test_a_float32_edit_applies_to_a_bfloat16_base_and_back(folders, tmp_path) -> None:
    from erasekit.artifacts.tensors import record_precisions

    made = load_backbone(folders["sd"], "cpu", "float32")
    artifact = record_precisions(make_artifact(made), made)
    assert artifact.base["hash_dtype"] == "float32"
    save_artifact(artifact, tmp_path / "edit")
    loaded = load_artifact(tmp_path / "edit")
    base = load_backbone(folders["sd"], "cpu", "bfloat16")
    before = snapshot(base)
    assert all(w.dtype == torch.bfloat16 for w in before.values())
    applied = apply_artifact(base, loaded)
    linears = editable_linears(base)
    for key, weight in loaded.weights.items():
        current = linears[key.removesuffix(".weight")].weight
        assert current.dtype == torch.bfloat16 and torch.equal(current, weight.to(torch.bfloat16))
    assert base.generate(PROMPTS[:1], SEEDS[:1], steps=STEPS).dtype == np.uint8
    remove_artifact(base, applied)
    assert all(torch.equal(before[n], m.weight) for n, m in editable_linears(base).items())  # restored exactly


def test_a_bfloat16_edit_applies_to_a_float32_base(folders) -> None:
    from erasekit.artifacts.tensors import record_precisions

    made = load_backbone(folders["sd"], "cpu", "bfloat16")
    artifact = record_precisions(make_artifact(made), made)
    base = load_backbone(folders["sd"], "cpu", "float32")
    before = snapshot(base)
    remove_artifact(base, apply_artifact(base, artifact))
    assert all(torch.equal(before[n], m.weight) for n, m in editable_linears(base).items())


def test_precision_does_not_excuse_another_base(folders) -> None:
    from erasekit.artifacts.tensors import record_precisions

    made = load_backbone(folders["sd"], "cpu", "float32")
    recorded = record_precisions(make_artifact(made), made)
    unrecorded = make_artifact(made)  # as older artifacts: float32 hashes only
    other = load_backbone(folders["sd_other"], "cpu", "bfloat16")
    same_in_bf16 = load_backbone(folders["sd"], "cpu", "bfloat16")
    with pytest.raises(UserError, match="different base model"):
        apply_artifact(other, recorded)
    with pytest.raises(UserError, match="different base model"):
        apply_artifact(same_in_bf16, unrecorded)


def test_a_float16_folder_edit_matches_in_float32_exactly(folders, tmp_path) -> None:
    half = tmp_path / "sd16"
    load_backbone(folders["sd"], "cpu", "float16").pipe.save_pretrained(str(half), safe_serialization=True)
    made = load_backbone(half, "cpu", "float16")
    artifact = make_artifact(made)  # float32 hashes of float16 values: the same in a float32 load
    base = load_backbone(half, "cpu", "float32")
    before = snapshot(base)
    remove_artifact(base, apply_artifact(base, artifact))
    assert all(torch.equal(before[n], m.weight) for n, m in editable_linears(base).items())
