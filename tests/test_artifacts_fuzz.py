"""Bad edit artifacts, hand-written and generated: ``load_artifact`` returns an Artifact or raises a one-line
UserError, never another exception, and what it returns can be saved and loaded again (issue 21).

Every case starts from one valid artifact holding every part a manifest may describe (replaced weights, a MoEraser,
a keyed eraser with its memory and restore path, a prompt filter, stage rows), built on a stand-in backbone of three
small linear maps: no pipeline is needed. Most damage is written back with both hashes made to agree
(``test_artifacts.resign``), so that the schema and the tensor checks, not the hashes, must catch it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable
from functools import reduce
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import safetensors.torch
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from torch import nn

import erasekit.artifacts.manifest as manifest_module
from erasekit.artifacts import Artifact, build_artifact, load_artifact, save_artifact
from erasekit.artifacts.manifest import MANIFEST_SHA256
from erasekit.errors import UserError
from erasekit.methods.etc.keyed import ConceptMemory, KeyedEraser
from erasekit.methods.etc.moeraser import MoEraser, MoEraserConfig
from test_artifacts import resign

TEXT, TO_K, TO_V = "text.layer.0", "unet.attn2.to_k", "unet.attn2.to_v"  # TO_K: a MoEraser; TO_V: keyed, replaced
FUZZ = settings(max_examples=100, deadline=None, database=None)


class StandIn:
    """What ``build_artifact`` reads of a backbone: one 4 -> 4 text layer and two 4 -> 6 projectors."""

    def __init__(self) -> None:
        self.linears = {TEXT: nn.Linear(4, 4), TO_K: nn.Linear(4, 6), TO_V: nn.Linear(4, 6)}

    def identity(self) -> dict:
        return {"family": "stand-in", "source": "tests"}

    def text_layers(self) -> list[tuple[str, nn.Linear]]:
        return [(TEXT, self.linears[TEXT])]

    def projectors(self) -> dict[str, nn.Linear]:
        return {TO_K: self.linears[TO_K], TO_V: self.linears[TO_V]}


def full_artifact() -> Artifact:
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    moeraser = MoEraser(4, 6, MoEraserConfig(experts=2, hidden=3, top_k=1))
    memory = ConceptMemory(
        torch.eye(4), rand(3, 4), rand(3, 2, 4), rand(3, 4), 1.0, 2, rand(1, 4), torch.tensor([0, 0, 1]), 0.5
    )
    keyed = KeyedEraser(memory, 4, 6, restore=True)
    with torch.no_grad():
        for p in [*moeraser.parameters(), keyed.restore_in, keyed.restore_out]:
            p.copy_(rand(*p.shape))
    stages = [
        {"stage": "projectors", "maps": 2, "first": TO_K, "gap": 0.5, "residual": 1e-7, "delta": 0.1,
         "constraints": 3, "rank": 3, "d_in": 4, "least_squares": False},
        {"stage": "memory", "seconds": 0.25, "peak_mib": 3.0, "steps": 10},
    ]  # fmt: skip
    return build_artifact(
        StandIn(),
        "etc",
        {"ridge": 0.5, "work_dir": None, "templates": ["a {}"]},
        {"targets": ["cat"], "anchors": ["animal"], "preserve": ["dog"], "kind": "object", "templates": ["a {}"]},
        {TEXT: rand(4, 4), TO_V: rand(6, 4)},
        {"seconds": 1.5, "peak_mib": 12.0, "stages": stages, "erase_loss": None, "seconds_by_stage": {"memory": 0.25}},
        modules={TO_K: moeraser, TO_V: keyed},
        prompt_filter={"words": ["cat", "Dog"], "replacements": ["animal", "animal"]},
    )


class Valid(NamedTuple):
    manifest: dict
    tensors: dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> Valid:
    folder = save_artifact(full_artifact(), tmp_path_factory.mktemp("valid") / "edit")
    return Valid(
        json.loads((folder / "manifest.json").read_text()), safetensors.torch.load_file(folder / "tensors.safetensors")
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the generated cases write into, one after another."""
    return tmp_path_factory.mktemp("scratch")


def load_or_refuse(folder: Path, again: Path) -> Artifact | None:
    """Load; a refusal must be one line. What loads must save and load again (so it passes the schema, and its
    tensors are finite)."""
    try:
        loaded = load_artifact(folder)
    except UserError as error:
        assert "\n" not in str(error)
        return None
    load_artifact(save_artifact(loaded, again, overwrite=True))
    return loaded


def test_the_full_artifact_loads(valid: Valid, tmp_path: Path) -> None:
    resign(tmp_path, copy.deepcopy(valid.manifest), dict(valid.tensors))
    loaded = load_or_refuse(tmp_path, tmp_path / "again")
    assert (
        loaded is not None
        and set(loaded.modules) == {TO_K, TO_V}
        and set(loaded.weights)
        == {
            f"{TEXT}.weight",
            f"{TO_V}.weight",
        }
    )
    assert loaded.prompt_filter == valid.manifest["prompt_filter"] and loaded.metrics == valid.manifest["metrics"]


# --- hand-written bad inputs: each a different kind of damage, each a one-line UserError ----------------------

Change = Callable[[dict, dict], Any]  # changes (manifest, tensors) in place, before both files are signed


def _parent(manifest: dict, path: tuple) -> Any:
    return reduce(lambda value, key: value[key], path[:-1], manifest)


def put(path: tuple, value: Any) -> Change:
    return lambda manifest, tensors: _parent(manifest, path).__setitem__(path[-1], value)


def drop(*paths: tuple) -> Change:
    def change(manifest: dict, tensors: dict) -> None:
        for path in paths:
            del _parent(manifest, path)[path[-1]]

    return change


def tensor(key: str, make: Callable[[torch.Tensor], torch.Tensor | None]) -> Change:
    """Replace a tensor by ``make(it)`` (None: delete it)."""

    def change(manifest: dict, tensors: dict) -> None:
        made = make(tensors.get(key, torch.zeros(2)))
        if made is None:
            del tensors[key]
        else:
            tensors[key] = made.contiguous()

    return change


def manifest_text(make: Callable[[str], str | bytes]) -> Callable[[Path], None]:
    """Rewrite the signed manifest file's text (nothing re-signed)."""

    def after(folder: Path) -> None:
        made = make((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_bytes(made.encode() if isinstance(made, str) else made)

    return after


def tensors_bytes(make: Callable[[bytes], bytes], fix_hash: bool) -> Callable[[Path], None]:
    """Rewrite the tensors file's bytes; ``fix_hash``: record their SHA-256 in the manifest."""

    def after(folder: Path) -> None:
        data = make((folder / "tensors.safetensors").read_bytes())
        (folder / "tensors.safetensors").write_bytes(data)
        if fix_hash:
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest["tensors_sha256"] = hashlib.sha256(data).hexdigest()
            (folder / "manifest.json").write_text(json.dumps(manifest))

    return after


def metadata(values: dict[str, str]) -> Callable[[Path], None]:
    """Save the tensors file again with this metadata, and record its new SHA-256 in the manifest."""

    def after(folder: Path) -> None:
        path = folder / "tensors.safetensors"
        safetensors.torch.save_file(safetensors.torch.load_file(path), str(path), values)
        tensors_bytes(lambda data: data, fix_hash=True)(folder)

    return after


def replace_folder_file(name: str) -> Callable[[Path], None]:
    def after(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()

    return after


class Bad(NamedTuple):
    message: str  # a regex the UserError matches
    change: Change | None = None
    after: Callable[[Path], None] | None = None  # on the signed folder


def _without_keyed(manifest: dict, tensors: dict) -> None:
    """No keyed module and no memory entry, its memory tensors left behind."""
    del manifest["modules"][TO_V], manifest["memory"]
    for key in [k for k in tensors if k.startswith(f"{TO_V}::")]:
        del tensors[key]


def _deep(levels: int) -> Any:
    return json.loads("[" * levels + "]" * levels)


K, V, M = ("modules", TO_K), ("modules", TO_V), ("memory",)
STAGE = ("metrics", "stages", 0)
E = f"{TO_K}::eraser."
BAD = {
    # the manifest file: bytes, JSON syntax, strictness, depth
    "manifest_not_utf8": Bad(
        "manifest.json is not UTF-8 text", after=manifest_text(lambda t: b"\xff\xfe" + t.encode())
    ),
    "manifest_utf8_bom": Bad("not strict JSON: Unexpected UTF-8 BOM", after=manifest_text(lambda t: "\ufeff" + t)),
    "manifest_truncated": Bad("not strict JSON", after=manifest_text(lambda t: t[: len(t) // 2])),
    "manifest_empty": Bad("not strict JSON: Expecting value", after=manifest_text(lambda t: "")),
    "manifest_trailing_data": Bad("not strict JSON: Extra data", after=manifest_text(lambda t: t + "{}")),
    "manifest_a_list": Bad("manifest.json is not a JSON object", after=manifest_text(lambda t: f"[{t}]")),
    "manifest_a_string": Bad("manifest.json is not a JSON object", after=manifest_text(lambda t: '"manifest"')),
    "manifest_null": Bad("manifest.json is not a JSON object", after=manifest_text(lambda t: "null")),
    "nan_constant": Bad("NaN is not a JSON number", after=manifest_text(lambda t: t.replace("1.5", "NaN", 1))),
    "infinity_constant": Bad(
        "-Infinity is not a JSON number", after=manifest_text(lambda t: t.replace("1.5", "-Infinity", 1))
    ),
    "float_overflow": Bad(
        "'metrics.seconds' must be a finite number", after=manifest_text(lambda t: t.replace("1.5", "1e999", 1))
    ),
    "huge_int_literal": Bad(
        "not strict JSON: Exceeds the limit", after=manifest_text(lambda t: t.replace("1.5", "9" * 5000, 1))
    ),
    "repeated_key": Bad(
        "key 'method' appears twice", after=manifest_text(lambda t: t.replace("{", '{"method": "x",', 1))
    ),
    "nesting_100000_deep": Bad(
        "nested too deeply",
        after=manifest_text(lambda t: t.replace("{", f'{{"deep": {"[" * 100_000}{"]" * 100_000},', 1)),
    ),
    "nesting_40_deep": Bad(r"nested too deeply \(more than 32 levels\)", put(("config", "deep"), _deep(40))),
    "manifest_a_folder": Bad(r"not an edit artifact \(no manifest.json\)", after=replace_folder_file("manifest.json")),
    "lone_surrogate": Bad("'method' must be valid Unicode text", put(("method",), "\ud800")),
    "surrogate_key": Bad("'config' has key '\\\\udc80', which is not valid Unicode", put(("config", "\udc80"), 1)),
    # top-level fields
    "no_method": Bad("'method' is missing", drop(("method",))),
    "method_a_number": Bad("'method' must be a non-blank string", put(("method",), 7)),
    "method_blank": Bad("'method' must be a non-blank string", put(("method",), "  ")),
    "version_as_text": Bad("'format_version' must be 1", put(("format_version",), "1")),
    "version_as_bool": Bad("'format_version' must be 1", put(("format_version",), True)),
    "version_as_float": Bad("'format_version' must be 1", put(("format_version",), 1.0)),
    "future_version": Bad("unsupported artifact format_version 2", put(("format_version",), 2)),
    "unknown_field": Bad("'signature' is not a field erasekit writes", put(("signature",), "x")),
    "config_a_list": Bad("'config' must be an object", put(("config",), [])),
    "versions_a_number": Bad("'versions.torch' must be a string", put(("versions", "torch"), 2)),
    "created_a_number": Bad("'created' must be a string", put(("created",), 0)),
    # concepts and base
    "no_targets": Bad(r"'concepts.targets' must hold at least 1", put(("concepts", "targets"), [])),
    "target_a_number": Bad(r"'concepts.targets\[0\]' must be a non-blank string", put(("concepts", "targets"), [3])),
    "anchor_count": Bad(r"malformed concepts \(one anchor per target", put(("concepts", "anchors"), ["a", "b"])),
    "template_without_slot": Bad("exactly one '{}'", put(("concepts", "templates"), ["a photo"])),
    "template_two_slots": Bad("exactly one '{}'", put(("concepts", "templates"), ["{} and {}"])),
    "unknown_concepts_field": Bad("'concepts.kinds' is not a field", put(("concepts", "kinds"), [])),
    "no_family": Bad("'base.family' is missing", drop(("base", "family"))),
    "base_nested_value": Bad("'base.extra' must be a string, a number", put(("base", "extra"), {"a": 1})),
    # hashes of the base model's weights
    "sha_not_hex": Bad("must be a SHA-256", put(("original_sha256", f"{TEXT}.weight"), "xyz")),
    "sha_upper_case": Bad("must be a SHA-256", put(("original_sha256", f"{TEXT}.weight"), "A" * 64)),
    "sha_key_not_a_weight": Bad(
        "has key 'text.layer.0.bias', not a weight name", put(("original_sha256", f"{TEXT}.bias"), "0" * 64)
    ),
    "sha_for_no_tensor": Bad("name different weights", put(("original_sha256", "text.layer.9.weight"), "0" * 64)),
    "tensors_sha_short": Bad(
        "'tensors_sha256' must be a SHA-256",
        after=manifest_text(lambda t: json.dumps({**json.loads(t), "tensors_sha256": "ab"})),
    ),
    # metrics and stages
    "metrics_a_list": Bad("'metrics' must be an object", put(("metrics",), [1])),
    "seconds_huge_int": Bad("'metrics.seconds' must be a finite number", put(("metrics", "seconds"), 10**400)),
    "peak_mib_text": Bad("'metrics.peak_mib' must be a finite number", put(("metrics", "peak_mib"), "12")),
    "stages_an_object": Bad("'metrics.stages' must be a list", put(("metrics", "stages"), {"stage": "x"})),
    "stage_negative_seconds": Bad(
        r"stages\[1\].seconds' must be a finite number >= 0", put(("metrics", "stages", 1, "seconds"), -1)
    ),
    "stage_unnamed": Bad(r"'metrics.stages\[0\].stage' is missing", drop((*STAGE, "stage"))),
    "stage_fractional_maps": Bad(r"'metrics.stages\[0\].maps' must be an integer", put((*STAGE, "maps"), 1.5)),
    "stage_flag_as_text": Bad(r"least_squares' must be true or false", put((*STAGE, "least_squares"), "no")),
    "stage_partial_closed_form": Bad(
        r"malformed metrics.stages\[0\] \(a closed-form stage has all of", drop((*STAGE, "gap"))
    ),
    "stage_a_string": Bad(r"'metrics.stages\[0\]' must be an object", put(STAGE, "projectors")),
    # modules
    "modules_a_list": Bad("'modules' must be an object", put(("modules",), [])),
    "unknown_kind": Bad("kind\" must be one of 'moeraser', 'keyed'", put((*K, "kind"), "lora")),
    "no_kind": Bad('kind" must be one of', drop((*K, "kind"))),
    "d_in_zero": Bad(r"d_in\" must be an integer in \[1, 2147483647\]", put((*K, "d_in"), 0)),
    "d_out_a_bool": Bad(r"d_out\" must be an integer", put((*K, "d_out"), True)),
    "d_in_beyond_int32": Bad(r"d_in\" must be an integer in \[1, 2147483647\]", put((*K, "d_in"), 2**31)),
    "d_out_other_than_weight": Bad(r"to_v.weight' has shape \(6, 4\), expected shape \(5, 4\)", put((*V, "d_out"), 5)),
    "module_name_with_separator": Bad(
        "has key 'unet.attn2.to_k::x', not a module name", put(("modules", f"{TO_K}::x"), {"kind": "keyed"})
    ),
    "module_without_hash": Bad("name different weights", drop(("original_sha256", f"{TO_K}.weight"))),
    "config_unknown_field": Bad('config.rank" is not a field', put((*K, "config", "rank"), 4)),
    "config_experts_zero": Bad(r"config.experts\" must be an integer in \[1,", put((*K, "config", "experts"), 0)),
    "config_text_hidden": Bad(r"config.hidden\" must be an integer", put((*K, "config", "hidden"), "3")),
    "config_negative_weight": Bad(
        r"config.shared_weight\" must be a finite number >= 0", put((*K, "config", "shared_weight"), -1)
    ),
    "config_missing": Bad('config" is missing', drop((*K, "config"))),
    "top_k_over_experts": Bad(r"bad MoEraser config \(top_k must be in", put((*K, "config", "top_k"), 5)),
    "config_other_than_tensors": Bad(r"MoEraser tensor .* expected shape", put((*K, "config", "hidden"), 4)),
    "config_sizes_overflow": Bad(
        "MoEraser", put((*K, "config"), {"experts": 2**31 - 1, "hidden": 2**31 - 1, "top_k": 1})
    ),
    "restore_as_text": Bad('restore" must be true or false', put((*V, "restore"), "yes")),
    "restore_flipped": Bad(r"has keyed eraser tensors .* expected", put((*V, "restore"), False)),
    # the keyed erasers' memory
    "keyed_without_memory": Bad(r"malformed manifest \(the keyed modules need the memory entry\)", drop(M)),
    "memory_without_keyed": Bad(r"malformed manifest \(a memory entry without keyed modules\)", drop(V)),
    "memory_per_zero": Bad(r"'memory.per' must be an integer in \[1,", put((*M, "per"), 0)),
    "memory_preserved_negative": Bad(r"'memory.preserved' must be an integer in \[0,", put((*M, "preserved"), -1)),
    "memory_extra_field": Bad("'memory.radius' is not a field", put((*M, "radius"), 1.0)),
    "memory_other_d": Bad(r"concept memory tensor ::memory\.\w+ .* expected shape", put((*M, "d"), 5)),
    "memory_other_count": Bad(r"concept memory tensor .* expected shape", put((*M, "distributions"), 4)),
    "memory_sizes_overflow": Bad(
        "memory", put(M, {"d": 4, "distributions": 2**31 - 1, "per": 2**31 - 1, "candidates": 1, "preserved": 0})
    ),
    "memory_tensors_without_entry": Bad("has memory tensors, manifest.json no memory entry", _without_keyed),
    # the prompt filter
    "filter_a_string": Bad("'prompt_filter' must be an object", put(("prompt_filter",), "cat")),
    "filter_without_words": Bad("'prompt_filter.words' must hold at least 1", put(("prompt_filter", "words"), [])),
    "filter_blank_word": Bad(
        r"'prompt_filter.words\[1\]' must be a non-blank string", put(("prompt_filter", "words", 1), " ")
    ),
    "filter_count": Bad("malformed prompt_filter", put(("prompt_filter", "replacements"), ["animal"])),
    "filter_case_clash": Bad(
        "malformed prompt_filter .*ignores case",
        put(("prompt_filter",), {"words": ["cat", "CAT"], "replacements": ["a", "b"]}),
    ),
    # the two hashes
    "manifest_edited": Bad(
        "manifest.json was changed after it was saved",
        after=manifest_text(lambda t: t.replace('"ridge": 0.5', '"ridge": 5')),
    ),
    "manifest_hash_wrong": Bad(
        "changed after it was saved", after=metadata({"format": "pt", MANIFEST_SHA256: "0" * 64})
    ),
    "manifest_hash_absent": Bad("records no hash of manifest.json", after=metadata({"format": "pt"})),
    "tensors_byte_flipped": Bad(
        "tensors.safetensors does not match the SHA-256",
        after=tensors_bytes(lambda d: d[:-1] + bytes([d[-1] ^ 1]), False),
    ),
    "tensors_truncated": Bad("does not match the SHA-256", after=tensors_bytes(lambda d: d[:-8], fix_hash=False)),
    "tensors_garbage": Bad(
        "could not read tensors.safetensors", after=tensors_bytes(lambda d: b"\x10" + bytes(15), True)
    ),
    "tensors_empty": Bad("could not read tensors.safetensors", after=tensors_bytes(lambda d: b"", fix_hash=True)),
    "tensors_header_overlong": Bad(
        "could not read tensors.safetensors", after=tensors_bytes(lambda d: (2**40).to_bytes(8, "little") + d[8:], True)
    ),
    "tensors_a_folder": Bad(
        r"incomplete edit artifact \(no tensors.safetensors\)", after=replace_folder_file("tensors.safetensors")
    ),
    # tensors: dtype, values, shapes, names
    "weight_int64": Bad("is torch.int64, an artifact holds only", tensor(f"{TEXT}.weight", lambda t: t.long())),
    "weight_bool": Bad("is torch.bool", tensor(f"{TEXT}.weight", lambda t: t > 0)),
    "weight_uint8": Bad("is torch.uint8", tensor(f"{TEXT}.weight", lambda t: t.to(torch.uint8))),
    "weight_float8": Bad("is torch.float8_e4m3fn", tensor(f"{TEXT}.weight", lambda t: t.to(torch.float8_e4m3fn))),
    "weight_nan": Bad(
        "holds NaN or infinite values", tensor(f"{TEXT}.weight", lambda t: t.index_fill(0, torch.tensor([0]), math.nan))
    ),
    "weight_inf": Bad(
        "holds NaN or infinite values", tensor(f"{TEXT}.weight", lambda t: t.index_fill(1, torch.tensor([0]), math.inf))
    ),
    "weight_a_vector": Bad(r"has shape \(16,\), expected a matrix", tensor(f"{TEXT}.weight", lambda t: t.flatten())),
    "wrapped_weight_transposed": Bad(
        r"has shape \(4, 6\), expected shape \(6, 4\)", tensor(f"{TO_V}.weight", lambda t: t.T)
    ),
    "weight_missing": Bad("name different weights", tensor(f"{TEXT}.weight", lambda t: None)),
    "weight_unlisted": Bad("name different weights", tensor("text.layer.9.weight", lambda t: torch.zeros(4, 4))),
    "eraser_param_nan": Bad(
        "holds NaN or infinite", tensor(E + "w_out", lambda t: t.index_fill(0, torch.tensor([0]), math.nan))
    ),
    "eraser_param_missing": Bad(r"has MoEraser tensors .* expected", tensor(E + "w_out", lambda t: None)),
    "eraser_param_extra": Bad(r"has MoEraser tensors .* expected", tensor(E + "w_extra", lambda t: torch.zeros(2))),
    "eraser_param_reshaped": Bad("MoEraser tensor .* expected shape", tensor(E + "w_out", lambda t: t.flatten())),
    "eraser_mixed_dtypes": Bad("MoEraser tensors for .* mix dtypes", tensor(E + "w_out", lambda t: t.double())),
    "tensor_for_no_module": Bad(
        "for no module of manifest.json", tensor("unet.nope::eraser.w", lambda t: torch.zeros(2))
    ),
    "tensor_not_an_eraser": Bad("for no module of manifest.json", tensor(f"{TO_K}::lora.a", lambda t: torch.zeros(2))),
    "restore_param_missing": Bad("has keyed eraser tensors", tensor(f"{TO_V}::eraser.restore_in", lambda t: None)),
    "memory_tensor_missing": Bad("has concept memory tensors", tensor("::memory.values", lambda t: None)),
    "centres_float32": Bad(
        r"::memory.centres is torch.float32 .* of torch.float16", tensor("::memory.centres", lambda t: t.float())
    ),
    "residual_above_one": Bad(r"::memory.residual must be in \[0, 1\]", tensor("::memory.residual", lambda t: t + 1)),
    "residual_nan": Bad("'::memory.residual' holds NaN", tensor("::memory.residual", lambda t: t * math.nan)),
    "threshold_negative": Bad("::memory.threshold must be at least 0", tensor("::memory.threshold", lambda t: -t)),
    "concept_fractional": Bad("::memory.concept must be whole numbers", tensor("::memory.concept", lambda t: t + 0.5)),
    "concept_out_of_range": Bad("::memory.concept must be whole numbers", tensor("::memory.concept", lambda t: t + 3)),
    "concept_negative": Bad("::memory.concept must be whole numbers", tensor("::memory.concept", lambda t: t - 1)),
}


def test_the_catalogue_covers_many_kinds_of_damage() -> None:
    assert len(BAD) >= 100


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_a_one_line_user_error(valid: Valid, tmp_path: Path, name: str) -> None:
    bad = BAD[name]
    manifest, tensors = copy.deepcopy(valid.manifest), dict(valid.tensors)
    if bad.change is not None:
        bad.change(manifest, tensors)
    resign(tmp_path, manifest, tensors)
    if bad.after is not None:
        bad.after(tmp_path)
    with pytest.raises(UserError, match=bad.message) as info:
        load_artifact(tmp_path)
    assert "\n" not in str(info.value)


def test_an_oversized_manifest_is_not_read(valid: Valid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resign(tmp_path, valid.manifest, valid.tensors)
    monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(UserError, match=r"manifest.json has \d+ bytes, more than the 100 a manifest may have"):
        load_artifact(tmp_path)


# --- generated bad inputs ---------------------------------------------------------------------------------------

SPECIAL = st.sampled_from(
    [0, 1, -1, 2, 2**31 - 1, 2**31, 2**63, 10**400, 0.5, -0.0, 1e308, "", " ", "{}", "a {}", "::", "x.weight",
     "keyed", "moeraser", "0" * 64, "\ud800", True, False, None, [], {}]
)  # fmt: skip
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
)
JSON = st.recursive(
    SCALARS | SPECIAL,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def value_paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into ``value`` (the root included), "tensors_sha256" aside: the signing sets it."""
    if isinstance(value, dict):
        children = [(key, item) for key, item in value.items() if path or key != "tensors_sha256"]
    else:
        children = list(enumerate(value)) if isinstance(value, list) else []
    return [path] + [p for key, item in children for p in value_paths(item, (*path, key))]


def mutate(manifest: dict, path: tuple, how: str, value: Any, key: str) -> None:
    """At ``path``: replace the value, delete it, or insert ``value`` into it (under ``key`` in an object; a scalar
    becomes a list of itself and ``value``)."""
    if not path:
        manifest[key] = value
        return
    parent, last = _parent(manifest, path), path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][key] = value
    elif isinstance(parent[last], list):
        parent[last].append(value)
    else:
        parent[last] = [parent[last], value]


@FUZZ
@given(data=st.data())
def test_generated_manifests_load_or_are_refused(valid: Valid, scratch: Path, data: st.DataObject) -> None:
    manifest = copy.deepcopy(valid.manifest)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(value_paths(manifest)))
        how = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        value = copy.deepcopy(data.draw(JSON))  # SPECIAL's lists and objects are shared between examples
        mutate(manifest, path, how, value, data.draw(st.text(max_size=6) | st.sampled_from(["stage", "d"])))
    resign(scratch, manifest, valid.tensors)
    event("loaded" if load_or_refuse(scratch, scratch.with_name("again")) else "refused")


DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int64, torch.bool, torch.uint8]
FILLS = st.floats(allow_nan=True, allow_infinity=True, width=16) | st.sampled_from([0.0, 0.5, 1.0, -1.0, 2.0, 3.0])
NEW_KEYS = ["text.layer.9.weight", f"{TO_K}::eraser.extra", "::memory.extra", f"{TO_K}::lora.a", "unet.nope::eraser.w"]


@FUZZ
@given(data=st.data())
def test_generated_tensors_load_or_are_refused(valid: Valid, scratch: Path, data: st.DataObject) -> None:
    tensors = dict(valid.tensors)
    for _ in range(data.draw(st.integers(1, 2))):
        key = data.draw(st.sampled_from(sorted(tensors) + NEW_KEYS))
        if data.draw(st.booleans()) and key in tensors:
            del tensors[key]
            continue
        old = tuple(tensors[key].shape) if key in tensors else (2,)
        shape = data.draw(st.sampled_from([old, old[::-1], (*old, 1), (), (0,), (3,)]))
        dtype, fill = data.draw(st.sampled_from(DTYPES)), data.draw(FILLS)
        base = tensors.get(key, torch.zeros(shape)).reshape(-1)
        made = (
            torch.full(shape, fill)
            if data.draw(st.booleans()) or base.numel() != math.prod(shape)
            else base.reshape(shape)
        )
        tensors[key] = (made if dtype.is_floating_point else made.nan_to_num()).to(dtype).contiguous()
    resign(scratch, valid.manifest, tensors)
    event("loaded" if load_or_refuse(scratch, scratch.with_name("again")) else "refused")


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4), cut=st.booleans())
def test_damaged_tensors_file_bytes_load_or_are_refused(valid: Valid, scratch: Path, edits, cut: bool) -> None:
    resign(scratch, valid.manifest, valid.tensors)
    data = bytearray((scratch / "tensors.safetensors").read_bytes())
    for position, byte in edits:
        data[position % len(data)] = byte
    if cut:
        del data[edits[0][0] % len(data) :]
    tensors_bytes(lambda _: bytes(data), fix_hash=True)(scratch)  # the manifest's hash excludes this field
    event("loaded" if load_or_refuse(scratch, scratch.with_name("again")) else "refused")


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10**5), st.binary(max_size=3)), min_size=1, max_size=4))
def test_damaged_manifest_bytes_load_or_are_refused(valid: Valid, scratch: Path, edits) -> None:
    resign(scratch, valid.manifest, valid.tensors)
    text = bytearray((scratch / "manifest.json").read_bytes())
    for position, chunk in edits:
        at = position % (len(text) + 1)
        text[at : at + len(chunk)] = chunk
    (scratch / "manifest.json").write_bytes(bytes(text))
    event("loaded" if load_or_refuse(scratch, scratch.with_name("again")) else "refused")
