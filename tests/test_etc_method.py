"""ETC end to end (methods/etc/) on a tiny random SD 1.x pipeline, its CLI, resume and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import run_cli
from erasekit.artifacts import apply_artifact, load_artifact, remove_artifact, save_artifact
from erasekit.backbones.loader import load_backbone
from erasekit.concepts.embeddings import CONTEXT_TEMPLATES
from erasekit.concepts.pairs import ConceptSet
from erasekit.errors import UserError
from erasekit.methods.base import erase_to_artifact
from erasekit.methods.etc.checks import heldout_decisions
from erasekit.methods.etc.config import TOKEN_FIELDS, ETCConfig, stage_key
from erasekit.methods.etc.erasers import fit_erasers, make_erasers
from erasekit.methods.etc.fit import nearest_pool, prepare_tokens
from erasekit.methods.etc.keyed import own_distances
from erasekit.methods.etc.memory import build_memory, lognormal_quantile, margin_radius, memory_keys, rewrite_radius
from erasekit.methods.etc.stage_log import StageLog
from erasekit.methods.etc.tokens import EncodedConcepts, TokenConcepts, TokenData
from tiny_pipelines import build_sd, build_sd3

pytestmark = pytest.mark.usefixtures("one_thread")

# The tiny CLIP tokenizer is byte-level with 32 positions: 3-letter concepts, the 10 "a {} <scene>" templates as the
# user's own contexts (no narrative template fits in 32 positions), 2 of them held out to calibrate.
TARGETS = ["cat", "dog"]
POOL = ["cow", "pig", "owl", "bee", "ant"]
TINY = dict(
    contexts=0,
    templates=tuple(CONTEXT_TEMPLATES[:10]),
    # byte-level sub-tokens ("c", "a", "t") are the pool's letters too: the relative rule (unit-tested in
    # test_etc_keyed.py) would keep them all on this random model; the radius rule exercises the mechanics
    rule="radius",
    pca_dim=4,
    components=2,
    target_samples=16,
    anchor_samples=8,
    mapping_samples=8,
    experts=2,
    hidden=8,
    steps=60,
    batch_size=64,
    preserve_weight=10.0,
    nir_seed=3,
    nir_rho=0.5,
    chunk=4,  # two chunks of target distributions
    keys_per_distribution=4,
)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    return build_sd(tmp_path_factory.mktemp("sd") / "sd")


@pytest.mark.parametrize(("eraser", "fit_stage"), [("keyed", "memory"), ("moe", "training")])
def test_etc_on_tiny_sd_erase_save_reload_apply_generate(tiny_sd: Path, tmp_path: Path, eraser: str, fit_stage: str):
    backbone = load_backbone(str(tiny_sd))
    concepts = ConceptSet.build(TARGETS, "", POOL)
    options = {**TINY, "eraser": eraser, "work_dir": str(tmp_path / "work")}
    artifact = erase_to_artifact(backbone, concepts, "etc", options)
    summary = artifact.metrics
    phrase_tokens = sum(len(backbone.token_segments([t])[0].ids[0]) - 2 for t in TARGETS)  # without BOS/EOS
    assert summary["distributions"] == phrase_tokens > len(TARGETS)
    stages = ["encoding", "fitting", "sampling", "transport", "keys", fit_stage, "checks", "nir"]
    assert [s["stage"] for s in summary["stages"]] == stages
    assert summary["restore_error"] < 1e-4
    if eraser == "moe":  # an eraser that does nothing has erase error exactly 1 (Δ = 0)
        assert summary["erase_error"] < 0.9
    assert summary["context_change"] < 0.2 and summary["mapping_change"] < 0.2
    if eraser == "moe":  # trained on them; the keyed eraser's radius comes from the real tokens alone
        assert summary["off_plane_change"] < 0.2
    assert set(artifact.modules) == set(backbone.projectors()) == {k.removesuffix(".weight") for k in artifact.weights}
    loaded = load_artifact(save_artifact(artifact, tmp_path / "edit"))
    prompts, seeds = ["a cat", "a cow"], [0, 1]
    before = backbone.generate(prompts, seeds, steps=2)
    applied = apply_artifact(backbone, loaded)
    after = backbone.generate(prompts, seeds, steps=2)
    remove_artifact(backbone, applied)
    assert not np.array_equal(before[0], after[0])  # the target's image changes
    if eraser == "keyed":  # a mapping-pool concept's tokens lie outside every target's radius: untouched
        assert np.abs(before[1].astype(int) - after[1].astype(int)).max() <= 1
    assert np.array_equal(backbone.generate(prompts, seeds, steps=2), before)
    stripped = apply_artifact(backbone, loaded, modules=False)  # module removal: NIR-corrupted weights alone
    removed = backbone.generate(prompts, seeds, steps=2)
    remove_artifact(backbone, stripped)
    assert not np.array_equal(removed, before) and not np.array_equal(removed, after)
    # the restore is exact: the intact NIR edit draws what the same erasers draw without NIR (shared training)
    plain = erase_to_artifact(backbone, concepts, "etc", {**options, "nir": False})
    applied = apply_artifact(backbone, plain)
    without_nir = backbone.generate(prompts, seeds, steps=2)
    remove_artifact(backbone, applied)
    assert np.abs(without_nir.astype(int) - after.astype(int)).max() <= 1


def test_keyed_etc_on_tiny_sd3_rewrites_what_the_context_embedder_reads(tmp_path: Path):
    backbone = load_backbone(str(build_sd3(tmp_path / "sd3")))
    concepts = ConceptSet.build(TARGETS, "", POOL)
    artifact = erase_to_artifact(backbone, concepts, "etc", {**TINY, "work_dir": str(tmp_path / "work")})
    assert set(artifact.modules) == {"transformer.context_embedder"}  # the one projector that reads encode()
    loaded = load_artifact(save_artifact(artifact, tmp_path / "edit"))
    states, _ = backbone.encode(["a cat", "a dog", "a pig", "a bee"])
    embedder = backbone.pipe.transformer.context_embedder
    with torch.no_grad():
        before = embedder(states)
        applied = apply_artifact(backbone, loaded)
        after = embedder(states)
        remove_artifact(backbone, applied)
    change = (after - before).abs().amax(dim=(1, 2))
    assert change[:2].min() > 1e-2 and change[2:].max() < 1e-5  # targets rewritten; "p..", "b.." share no prefix
    assert torch.equal(embedder(states), before)  # removed exactly
    # a damaged memory entry is a one-line error, not a traceback
    manifest = tmp_path / "edit" / "manifest.json"
    record = json.loads(manifest.read_text())
    for entry in ({**record["memory"], "per": 0}, None):
        manifest.write_text(
            json.dumps({**record, "memory": entry} if entry else {k: v for k, v in record.items() if k != "memory"})
        )
        with pytest.raises(UserError, match="memory"):
            load_artifact(tmp_path / "edit")


@pytest.mark.slow  # four ETC erasures: ~11 s
def test_a_rerun_loads_the_token_vectors_and_erasers_from_the_work_folder(tiny_sd: Path, tmp_path: Path):
    backbone, concepts = load_backbone(str(tiny_sd)), ConceptSet.build(TARGETS, "", POOL)
    options = {**TINY, "eraser": "moe", "nir": False, "work_dir": str(tmp_path / "work")}
    first = erase_to_artifact(backbone, concepts, "etc", options)
    again = erase_to_artifact(backbone, concepts, "etc", {**options, "lr": 5e-3})  # training settings differ
    assert [s["stage"] for s in again.metrics["stages"]] == ["tokens from the work folder", "training", "checks"]
    keyed = erase_to_artifact(backbone, concepts, "etc", {**options, "eraser": "keyed"})  # the same token vectors
    assert [s["stage"] for s in keyed.metrics["stages"]] == ["tokens from the work folder", "memory", "checks"]
    assert again.metrics["distributions"] == first.metrics["distributions"]
    assert again.metrics["erase_loss"] != first.metrics["erase_loss"]  # retrained, on the same token vectors
    same = erase_to_artifact(backbone, concepts, "etc", options)
    for name, eraser in first.modules.items():
        for a, b in zip(eraser.parameters(), same.modules[name].parameters(), strict=True):
            assert torch.equal(a, b)


def test_a_damaged_token_file_in_the_work_folder_is_computed_again(tiny_sd: Path, tmp_path: Path):
    backbone, concepts = load_backbone(str(tiny_sd)), ConceptSet.build(TARGETS, "", POOL)
    options = {**TINY, "nir": False, "work_dir": str(tmp_path / "work")}
    first = erase_to_artifact(backbone, concepts, "etc", options)
    (token_file,) = (tmp_path / "work").rglob("tokens.safetensors")
    token_file.write_bytes(token_file.read_bytes()[:100])
    again = erase_to_artifact(backbone, concepts, "etc", options)
    assert "tokens from the work folder" not in [s["stage"] for s in again.metrics["stages"][1:]]
    assert again.metrics["distributions"] == first.metrics["distributions"]
    assert [s["stage"] for s in erase_to_artifact(backbone, concepts, "etc", options).metrics["stages"]][0] == (
        "tokens from the work folder"  # the file was written again
    )


def test_interrupted_training_resumes_to_the_same_erasers(tiny_sd: Path, tmp_path: Path):
    projectors = dict(list(load_backbone(str(tiny_sd)).projectors().items())[:2])
    config = ETCConfig(**TINY)
    x = torch.randn(256, next(iter(projectors.values())).in_features)

    def loss_of(erasers, stop_at=None):
        calls = []

        def loss(generator):
            calls.append(1)
            if stop_at is not None and len(calls) > stop_at:
                raise KeyboardInterrupt
            batch = x[torch.randint(len(x), (32,), generator=generator)]
            return sum((e(batch) - 1.0).pow(2).mean() for e in erasers.values())

        return loss

    unbroken = make_erasers(projectors, config)
    fit_erasers(unbroken, loss_of(unbroken), 30, config, None, "unbroken", every=10)
    resumed = make_erasers(projectors, config)
    with pytest.raises(KeyboardInterrupt):
        fit_erasers(resumed, loss_of(resumed, stop_at=25), 30, config, tmp_path / "ckpt", "first", every=10)
    resumed = make_erasers(projectors, config)  # a fresh process: everything from the checkpoint at step 20
    fit_erasers(resumed, loss_of(resumed), 30, config, tmp_path / "ckpt", "resumed", every=10)
    for name in projectors:
        for a, b in zip(unbroken[name].parameters(), resumed[name].parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_keyed_memory_radius_and_shifts_from_token_data():
    # two distributions of 2 core samples each, one centre each; own distances 0..3
    targets = torch.tensor([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0], [10.0, 0.0]])
    mapped = targets + torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    data = TokenData(targets, mapped, torch.zeros(1, 2), distributions=2)
    data.centres, data.means, data.whiten = targets[::2, None], targets[::2], torch.eye(2)
    data.own_distance = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    memory = build_memory(data, ETCConfig(coverage=0.75, tail=0.0, gamma=0.5, residual=1.0))
    assert float(memory.threshold) == 2.0  # the 75% quantile; the neighbour-gap floor is 0.1 x 10
    shifts = 1.5 * torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    torch.testing.assert_close(memory.values, shifts)  # ρ = 1: a pure shift
    # ρ = 0: a rewritten token goes to its distribution's mean (0, 0) or (10, 0) moved by the shift
    torch.testing.assert_close(build_memory(data, ETCConfig(gamma=0.5, residual=0.0)).values, shifts + targets[::2])
    data.own_distance = torch.zeros(2, 2)  # no spread at all (a causal encoder): a tenth of the gap
    assert float(build_memory(data, ETCConfig()).threshold) == pytest.approx(1.0)  # and no log-normal to fit
    one = TokenData(targets[:2], mapped[:2], torch.zeros(1, 2), distributions=1)
    one.centres, one.means, one.whiten, one.own_distance = (
        targets[:1, None],
        targets[:1],
        torch.eye(2),
        torch.zeros(1, 2),
    )
    assert float(build_memory(one, ETCConfig()).threshold) == 0.0  # one distribution: no gap, no floor


def test_the_radius_is_calibrated_on_held_out_contexts_not_on_the_fitted_ones():
    # fitted contexts: tight clouds (spread 0.01); held-out contexts of the same concepts: spread 1. Keys come from
    # the fitted tokens, θ from the held-out ones: a radius set on the fitted tokens would miss new phrasings
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0]])
    fit = centres[:, None] + 0.01 * torch.randn(2, 40, 2, generator=gen)
    held = centres[:, None] + torch.randn(2, 20, 2, generator=gen)
    pool = torch.tensor([[0.0, 50.0], [50.0, 50.0], [25.0, 80.0]])[:, None] + torch.randn(3, 40, 2, generator=gen)
    targets = EncodedConcepts(TokenConcepts(fit, torch.arange(2), torch.zeros(2, dtype=torch.long)), held)
    pooled = EncodedConcepts(TokenConcepts(pool, torch.arange(3), torch.zeros(3, dtype=torch.long)), pool[:, :5])
    config = ETCConfig(keys_per_distribution=4, coverage=0.95, preserved_context_keys=2)
    keys = memory_keys(targets, pooled, torch.randn(10, 2, generator=gen) + 25, config, gen)
    assert keys["own_distance"].shape == (2, 20)  # one distance per held-out token
    data = TokenData(fit.reshape(-1, 2), fit.reshape(-1, 2), torch.zeros(1, 2), distributions=2, **keys)
    memory = build_memory(data, config)
    fitted_radius = float(own_distances(fit @ keys["whiten"], keys["centres"]).flatten().quantile(0.95))
    assert float(memory.threshold) > 20 * fitted_radius
    rewritten = memory.detect(held.reshape(-1, 2))[0].float().mean()
    assert rewritten >= 0.9 and heldout_decisions(memory, data)["heldout_target_rewritten"] >= 0.9
    assert heldout_decisions(memory, data)["heldout_pool_rewritten"] == 0.0


def test_margin_radius_moves_theta_to_the_middle_of_a_clear_margin_and_only_then():
    assert margin_radius(4.0, torch.tensor([12.0, 10.0])) == 7.0
    assert margin_radius(4.0, torch.tensor([3.0, 12.0])) == 4.0  # a kept token within θ: coverage decides
    assert margin_radius(4.0, torch.zeros(0)) == 4.0


def test_theta_reaches_phrasings_beyond_the_calibration_contexts_when_every_kept_token_is_far():
    # one concept, kept tokens 50 away: a token 1.5x farther out than any held-out context is still rewritten
    gen = torch.Generator().manual_seed(1)
    fit, held = torch.randn(1, 60, 2, generator=gen), torch.randn(1, 20, 2, generator=gen)
    pool = torch.tensor([[0.0, 50.0], [50.0, 0.0]])[:, None] + torch.randn(2, 40, 2, generator=gen)
    targets = EncodedConcepts(TokenConcepts(fit, torch.arange(1), torch.zeros(1, dtype=torch.long)), held)
    pooled = EncodedConcepts(TokenConcepts(pool, torch.arange(2), torch.zeros(2, dtype=torch.long)), pool[:, :5])
    config = ETCConfig(keys_per_distribution=4, coverage=1.0, tail=0.0, preserved_context_keys=2)
    keys = memory_keys(targets, pooled, pool.reshape(-1, 2), config, gen)
    data = TokenData(fit[0], fit[0], pool.reshape(-1, 2), distributions=1, **keys)
    memory = build_memory(data, config)
    calibrated = rewrite_radius(keys["own_distance"], keys["means"], config.coverage, config.tail)
    kept = memory.nearest(torch.cat([keys["check_pool"], pool.reshape(-1, 2)]))
    assert float(memory.threshold) == pytest.approx((calibrated + float(kept.min())) / 2)
    beyond = held[0] * 1.5  # centred near 0: every held-out token pushed outwards
    assert memory.nearest(beyond).max() > calibrated and memory.detect(beyond)[0].all()
    assert not memory.detect(pool.reshape(-1, 2))[0].any()


def test_a_fitted_tail_gives_the_same_radius_for_few_concepts_as_for_many_where_the_maximum_grows():
    def lognormal_sample(n: int) -> torch.Tensor:  # evenly spaced quantiles of exp(N(1, 0.3²)): no sampling luck
        return torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n).mul(0.3).add(1.0).exp()[None]

    few, many = lognormal_sample(100), lognormal_sample(100_000)
    means = torch.zeros(1, 2)
    maxima = [rewrite_radius(d, means, 1.0) for d in (few, many)]
    assert maxima[1] > 1.5 * maxima[0]  # the sample maximum grows with the sample
    exact = math.exp(1.0 + 0.3 * 3.719)  # the 1 - 1e-4 quantile of this log-normal
    fitted = [lognormal_quantile(d.flatten(), 1 - 1e-4) for d in (few, many)]
    assert fitted == [pytest.approx(exact, rel=0.05)] * 2  # the fitted quantile does not
    assert rewrite_radius(few, means, 1.0, tail=1e-4) == pytest.approx(fitted[0])
    assert fitted[0] > 1.3 * maxima[0]
    assert rewrite_radius(many, means, 1.0, tail=1e-4) == pytest.approx(maxima[1])  # never below the coverage one
    assert lognormal_quantile(torch.tensor([0.0, 0.0, 2.0]), 0.99) == 0.0  # one positive distance: nothing to fit


def test_the_token_checkpoint_is_keyed_by_what_the_tokens_depend_on_and_only_that():
    concepts = ConceptSet.build(TARGETS, "", POOL)

    def key(stage: str = "tokens", **fields) -> str:
        return stage_key(concepts, ETCConfig(**fields), stage)

    assert key() != key(contexts=50) and key() != key(holdout=0.3)
    # the rewrite's residual and θ's tail are built after the tokens, and the prompt states matter only to
    # concepts given by example prompts: a rerun reuses the tokens (but not the erase stage)
    assert key() == key(residual=1.0) == key(tail=0.0) == key(prompt_states="tokens")
    assert key("erase") != key("erase", residual=1.0)
    examples = tuple(f"a prompt {i}" for i in range(4))
    assert key(target_prompts=examples) != key(target_prompts=examples, prompt_states="tokens")


class ReadRecorder:
    """A config that records which of its fields are read."""

    def __init__(self, config: ETCConfig) -> None:
        self.config, self.read = config, set()

    def __getattr__(self, name: str):
        self.read.add(name)
        return getattr(self.config, name)


def test_the_token_key_holds_every_field_the_token_stage_reads_and_no_other(tiny_sd: Path):
    # the token stage (§1-§3 and the keyed eraser's keys) run on a config that records what it reads: a field it
    # reads outside the key would let a rerun reuse token vectors made under another value (config.read_by)
    backbone = load_backbone(str(tiny_sd))
    read = set()
    for targets, options in (
        (TARGETS, {"rule": "relative"}),
        (["cat"], {"target_prompts": tuple(f"a cat number {i}" for i in range(6)), "off_plane_samples": 0}),
    ):
        config = ReadRecorder(ETCConfig(**TINY | options))
        prepare_tokens(backbone, ConceptSet.build(targets, "", POOL), config, StageLog())
        read |= config.read
    assert read - {"work_dir"} == set(TOKEN_FIELDS)  # work_dir: where the embedding cache lies, not what it holds


def test_the_moeraser_takes_more_keys_per_distribution_than_fitted_contexts(tiny_sd: Path):
    # keys_per_distribution is the keyed eraser's setting (the CLI refuses it for moe): its default (32) is more than
    # the tiny run's 8 fitted contexts, which only the keyed eraser refuses
    backbone, concepts = load_backbone(str(tiny_sd)), ConceptSet.build(TARGETS, "", POOL)
    options = {k: v for k, v in TINY.items() if k != "keys_per_distribution"} | {"steps": 2, "nir": False}
    artifact = erase_to_artifact(backbone, concepts, "etc", options | {"eraser": "moe"})
    assert artifact.metrics["erase_loss"] is not None
    with pytest.raises(UserError, match="keys_per_distribution must be at most the fitted contexts"):
        erase_to_artifact(backbone, concepts, "etc", options)


def test_nearest_pool_picks_the_most_similar_concepts():
    pool = torch.eye(5)
    targets = torch.tensor([[1.0, 0.9, 0.8, 0.0, 0.0], [0.0, 0.0, 0.1, 1.0, 0.5]])
    assert nearest_pool(targets, pool, 3).tolist() == [[0, 1, 2], [3, 4, 2]]


def test_token_concepts_give_each_sub_token_its_distribution_and_align_them_from_the_end():
    # concept 0 has 2 sub-tokens, concept 1 has 3; sample values name (concept, position from the start)
    embeddings = [
        torch.full((4, 2, 1), 0.0) + torch.tensor([0.0, 1.0])[None, :, None],
        torch.full((4, 3, 1), 10.0) + torch.tensor([0.0, 1.0, 2.0])[None, :, None],
    ]
    tokens = TokenConcepts.build(embeddings, "phrase")
    assert tokens.owner.tolist() == [0, 0, 1, 1, 1] and tokens.from_end.tolist() == [0, 1, 0, 1, 2]
    assert tokens.samples[:, 0, 0].tolist() == [1.0, 0.0, 12.0, 11.0, 10.0]  # last sub-token first
    assert tokens.concept_means()[:, 0].tolist() == [0.5, 11.0]
    # concept 0's sub-token 2 from the end does not exist: clamped to its first sub-token
    assert tokens.at(torch.tensor([[0, 1], [0, 1]]), torch.tensor([[2, 2], [0, 0]])).tolist() == [[1, 4], [0, 2]]
    last = TokenConcepts.build(embeddings, "last")
    assert last.samples[:, 0, 0].tolist() == [1.0, 12.0] and last.from_end.tolist() == [0, 0]


@pytest.mark.parametrize(
    ("pool", "fragment"), [(["cow", "pig"], "at least 3"), (["cow", "pig", "cow", "owl"], "duplicate mapping-pool")]
)
def test_bad_mapping_pools_are_refused(tiny_sd: Path, pool, fragment):
    with pytest.raises(UserError, match=fragment):
        erase_to_artifact(load_backbone(str(tiny_sd)), ConceptSet.build(TARGETS, "", pool), "etc", TINY)


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        ({"hpd_samples": 50}, "hpd_samples"),
        ({"tokens": "all"}, "tokens"),
        ({"off_plane_radius": [0.8, 0.3]}, "off_plane_radius"),
        ({"off_plane_samples": -1}, "off_plane_samples"),
        ({"eraser": "mlp"}, "eraser must be one of keyed, moe"),
        ({"coverage": 0.0}, "coverage must be in"),
        ({"whiten_ridge": 0.0}, "whiten_ridge must be in"),
        ({"keys_per_distribution": 9}, "keys_per_distribution must be at most"),
        ({"rule": "nearest"}, "rule must be one of"),
        ({"prompt_states": "cls"}, "prompt_states must be one of"),
        ({"holdout": 1.0}, "holdout must be in"),
        ({"contexts": 0, "templates": ("a {}",)}, "at least 2 contexts"),
        ({"candidates": 0}, "candidates must be in"),
    ],
)
def test_bad_etc_options_are_refused(tiny_sd: Path, option, fragment):
    with pytest.raises(UserError, match=fragment):
        erase_to_artifact(load_backbone(str(tiny_sd)), ConceptSet.build(TARGETS, "", POOL), "etc", TINY | option)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("targets", "pool", "fragment"),
    [
        (["cat", "", "dog"], POOL, "line 2 is blank"),
        (["cat", "dog", "cat"], POOL, "duplicate target"),
        (TARGETS, [*POOL, "dog"], "in the mapping pool"),
        (TARGETS, ["cow", ""], "line 2 is blank"),
    ],
)
def test_cli_refuses_bad_etc_input_in_one_line(capsys, tiny_sd: Path, tmp_path: Path, targets, pool, fragment):
    out = tmp_path / "edit"
    code, _, err = run_cli(
        capsys,
        "erase",
        "--method",
        "etc",
        "--model",
        tiny_sd,
        "--targets",
        _write(tmp_path / "targets.txt", targets),
        "--mapping-pool",
        _write(tmp_path / "pool.txt", pool),
        "--out",
        out,
    )
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_etc_needs_a_mapping_pool(capsys, tiny_sd: Path, tmp_path: Path):
    code, _, err = run_cli(capsys, "erase", "--method", "etc", "--model", tiny_sd, "--target", "cat", "--out", tmp_path)
    assert code == 2 and "--mapping-pool" in err


def test_cli_etc_refuses_closed_form_options(capsys, tiny_sd: Path, tmp_path: Path):
    pool = _write(tmp_path / "pool.txt", POOL)
    args = ("erase", "--method", "etc", "--model", tiny_sd, "--target", "cat", "--mapping-pool", pool)
    code, _, err = run_cli(capsys, *args, "--anchor", "animal", "--out", tmp_path / "edit")
    assert code == 2 and "takes no --anchor" in err and not (tmp_path / "edit").exists()


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--set", "steps=10"], "setting steps applies to eraser=moe"),
        (["--set", "eraser=moe", "--set", "coverage=0.9"], "setting coverage applies to eraser=keyed"),
        (["--set", "eraser=moe", "--set", "residual=0.5"], "setting residual applies to eraser=keyed"),
        (["--set", "residual=1.5"], "residual must be in [0, 1]"),
    ],
)
def test_cli_etc_refuses_options_of_the_other_eraser(capsys, tiny_sd: Path, tmp_path: Path, flags, fragment):
    pool = _write(tmp_path / "pool.txt", POOL)
    args = ("erase", "--method", "etc", "--model", tiny_sd, "--target", "cat", "--mapping-pool", pool)
    code, _, err = run_cli(capsys, *args, *flags, "--out", tmp_path / "edit")
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "edit").exists()


def test_preserve_batches_draw_every_kind_of_preserved_token_equally():
    # boundary, off-plane, mapping, context
    anchors = torch.cat([torch.zeros(900, 2), torch.full((500, 2), 3.0), torch.ones(30, 2), torch.full((70, 2), 2.0)])
    data = TokenData(torch.zeros(4, 2), torch.zeros(4, 2), anchors, boundary=900, off_plane=500, mapping=30)
    batch = data.preserve_batch(401, torch.Generator().manual_seed(0))
    assert torch.bincount(batch[:, 0].long()).tolist() == [101, 100, 100, 100]
    assert {k: len(v) for k, v in data.anchor_kinds().items()} == {
        "boundary": 900, "off_plane": 500, "mapping": 30, "context": 70
    }  # fmt: skip
    no_pool = TokenData(torch.zeros(4, 2), torch.zeros(4, 2), anchors[:900], boundary=900)
    assert len(no_pool.preserve_groups()) == 1 and len(no_pool.preserve_batch(8, torch.Generator())) == 8
