"""The method contract (DESIGN.md, "Closed core"): every registered method goes erase -> save -> load -> apply ->
remove -> export-or-refuse on a tiny random SD 1.x pipeline through the public Artifact methods, and so does a method
defined in this file in a few lines, registered with the public registry and touching no other file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from erasekit.artifacts import Artifact, editable_linears, load_artifact
from erasekit.backbones.loader import load_backbone
from erasekit.concepts.embeddings import CONTEXT_TEMPLATES
from erasekit.concepts.pairs import ConceptSet
from erasekit.errors import UserError
from erasekit.methods import METHODS, EraseResult, register
from erasekit.methods.base import erase_to_artifact
from tiny_pipelines import build_sd

pytestmark = pytest.mark.usefixtures("one_thread")

PROBE = ["a cat", "a photo of a cat on grass"]
# ETC on the tiny byte-level pipeline (tests/test_etc_method.py): 3-letter concepts, the user's own 10 contexts
ETC_TINY = dict(contexts=0, templates=tuple(CONTEXT_TEMPLATES[:10]), rule="radius", pca_dim=4, components=2)
ETC_TINY |= dict(target_samples=16, anchor_samples=8, mapping_samples=8, chunk=4, nir_seed=3, keys_per_distribution=4)
# A method runs with its defaults unless it is named here: (options, case id), one case per kind of edit it makes
CASES: dict[str, list[tuple[dict, str]]] = {
    "etc": [
        (ETC_TINY, "keyed"),
        ({**ETC_TINY, "eraser": "moe", "experts": 2, "hidden": 8, "steps": 20}, "moe"),
    ],
}


def cases() -> list:
    return [
        pytest.param(name, options, id=f"{name}-{label}" if label else name)
        for name in sorted(METHODS)
        for options, label in CASES.get(name, [({}, "")])
    ]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory):
    return load_backbone(build_sd(tmp_path_factory.mktemp("sd") / "sd"))


def concepts_for(method: str) -> ConceptSet:
    """A target and its anchor, or, for a method that maps its targets onto a pool, two targets and the pool."""
    if getattr(METHODS[method].config_class, "MAPS_ONTO_POOL", False):
        return ConceptSet.build(["cat", "dog"], "", ["cow", "pig", "owl", "bee", "ant"])
    return ConceptSet.build(["cat"], "animal", ["dog"], templates=["a {}", "a photo of a {} on grass"])


def weights(backbone) -> dict[str, torch.Tensor]:
    return {name: linear.weight.detach().clone() for name, linear in editable_linears(backbone).items()}


@torch.no_grad()
def probe(backbone) -> dict[str, torch.Tensor]:
    """What the denoiser reads of the probe prompts: every embedding projector's output on encode()'s states (so
    replaced text layers and projectors, modules added to projectors and text filters all show)."""
    states, _ = backbone.encode(PROBE)
    return {name: linear(states) for name, linear in backbone.embedding_projectors().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_base(backbone, base_weights: dict, base_probe: dict) -> None:
    """The backbone is its base model again: same weights, no hook, no text filter, the same outputs."""
    assert same(weights(backbone), base_weights)
    assert not any(linear._forward_hooks for linear in editable_linears(backbone).values())
    assert getattr(backbone, "prompt_filter", None) is None
    assert same(probe(backbone), base_probe)


def as_json(value):
    """``value`` as it reads back from a manifest (tuples become lists)."""
    return json.loads(json.dumps(value))


def check_round_trip(artifact: Artifact, loaded: Artifact) -> None:
    recorded = (artifact.method, *as_json([artifact.config, artifact.concepts]))
    assert (loaded.method, loaded.config, loaded.concepts) == recorded
    assert loaded.original_sha256 == artifact.original_sha256 and same(loaded.weights, artifact.weights)
    assert loaded.modules.keys() == artifact.modules.keys() and loaded.entries == artifact.entries
    for name, module in artifact.modules.items():
        assert same(loaded.modules[name].state_dict(), module.state_dict())
    assert loaded.plugins == artifact.plugins


def check_export_or_refusal(backbone, artifact: Artifact, out: Path) -> None:
    """A weights-only edit exports a diffusers folder holding exactly its weights; a plug-in is refused."""
    if artifact.plugins:
        with pytest.raises(UserError, match="cannot hold; use it with --edit"):
            artifact.export(backbone, out)
        assert not out.exists()
        return
    artifact.export(backbone, out)
    exported = editable_linears(load_backbone(out))
    for key, weight in artifact.weights.items():
        assert torch.equal(exported[key.removesuffix(".weight")].weight, weight)


def check_contract(backbone, method: str, options: dict, tmp_path: Path) -> None:
    base_weights, base_probe = weights(backbone), probe(backbone)
    artifact = erase_to_artifact(backbone, concepts_for(method), method, options)
    assert_base(backbone, base_weights, base_probe)  # erasing returns the edit and leaves the model alone
    assert artifact.weights or artifact.plugins, "the edit changes nothing"
    # the originals rounded to each half precision: the edit applies to this base loaded in float16 or bfloat16 too
    assert {"original_sha256_float16", "original_sha256_bfloat16"} <= set(artifact.base)
    loaded = load_artifact(artifact.save(tmp_path / "edit"))
    check_round_trip(artifact, loaded)

    with loaded.applied(backbone):
        edited = probe(backbone)
        with pytest.raises(UserError, match="already applied"):
            loaded.apply(backbone)
    assert not same(edited, base_probe), "the applied edit changes nothing the denoiser reads"
    assert_base(backbone, base_weights, base_probe)

    handle = artifact.apply(backbone)  # the in-memory artifact draws what the loaded one does
    assert same(probe(backbone), edited)
    artifact.remove(handle)
    assert_base(backbone, base_weights, base_probe)
    artifact.apply(backbone)
    artifact.remove(backbone)  # by what it was applied to
    assert_base(backbone, base_weights, base_probe)

    check_export_or_refusal(backbone, loaded, tmp_path / "export")
    assert_base(backbone, base_weights, base_probe)


@pytest.mark.parametrize(("method", "options"), cases())
def test_every_registered_method_keeps_the_contract(backbone, method: str, options: dict, tmp_path: Path) -> None:
    check_contract(backbone, method, options, tmp_path)


# --- a method defined here: its config, its erase function, one registration ---------------------------------


@dataclass
class HalfConfig:
    factor: float = 0.5


def halve_projectors(backbone, concepts: ConceptSet, config: HalfConfig) -> EraseResult:
    """Scale every projector that reads encode() by ``factor`` (it erases everything, a little)."""
    projectors = backbone.embedding_projectors()
    return EraseResult({name: config.factor * linear.weight.detach() for name, linear in projectors.items()})


@pytest.fixture
def half_method():
    register("half", HalfConfig, "scale the projectors by a factor")(halve_projectors)
    yield "half"
    del METHODS["half"]


def test_a_method_defined_in_a_test_keeps_the_contract(backbone, half_method: str, tmp_path: Path) -> None:
    check_contract(backbone, half_method, {"factor": 0.5}, tmp_path)
    artifact = load_artifact(tmp_path / "edit")
    assert artifact.method == "half" and artifact.config == {"factor": 0.5}
    projectors = backbone.embedding_projectors()
    assert all(torch.equal(artifact.weights[f"{n}.weight"], 0.5 * p.weight) for n, p in projectors.items())


def test_the_artifact_api_undoes_on_error_and_refuses_what_it_cannot_undo(backbone, half_method: str, tmp_path):
    base_weights, base_probe = weights(backbone), probe(backbone)
    artifact = erase_to_artifact(backbone, concepts_for(half_method), half_method)
    with pytest.raises(RuntimeError, match="inside"), artifact.applied(backbone):
        raise RuntimeError("inside the block")
    assert_base(backbone, base_weights, base_probe)
    with pytest.raises(UserError, match="not applied"):
        artifact.remove(backbone)
    handle = artifact.apply(backbone)
    other = erase_to_artifact(backbone, concepts_for(half_method), half_method, {"factor": 0.25})
    with pytest.raises(UserError, match="another edit"):
        other.remove(handle)
    artifact.remove(handle)
    assert_base(backbone, base_weights, base_probe)
    with pytest.raises(TypeError, match="not a path"):
        artifact.apply(tmp_path)


@pytest.mark.slow  # the shipped model, four commands: ~30 s
def test_a_method_defined_in_a_test_runs_through_the_cli(half_method: str, tmp_path: Path, capsys) -> None:
    """erase, generate --edit, evaluate --edit and bench take the new method by its name, nothing else changed."""
    from cli_helpers import run_cli

    edit = tmp_path / "edit"
    steps = ("--steps", "2")
    prompts = tmp_path / "p.csv"
    prompts.write_text("prompt,evaluation_seed,case_number,concept,role\nred star on snow,0,0,shape=star,target\n")
    commands = [
        ("erase", "--method", half_method, "--target", "star", "--anchor", "shape", "--set", "factor=0.9",
         "--out", edit),
        ("generate", "--edit", edit, "--prompt", "red star on snow", "--num-images", "1", *steps,
         "--out", tmp_path / "g"),
        ("evaluate", "--edit", edit, "--prompts", prompts, *steps, "--out", tmp_path / "e"),
        ("bench", "--method", half_method, "--task", "instance", "--no-attacks", "--per-group", "1", *steps,
         "--out", tmp_path / "b"),
    ]  # fmt: skip
    for command in commands:
        code, _, err = run_cli(capsys, *command)
        assert code == 0, (command[0], err)
    assert json.loads((edit / "manifest.json").read_text())["config"] == {"factor": 0.9}
    assert "half" in (tmp_path / "b" / "results.md").read_text()
