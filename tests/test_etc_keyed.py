"""The keyed eraser's pure parts (methods/etc/keyed.py): whitening, nearest-key detection, the rewrite and its
cache, the projector view and its exact NIR restore."""

from __future__ import annotations

import pytest
import torch

from erasekit.methods.etc.keyed import ConceptMemory, KeyedEraser, kmeans, own_distances, pooled_whitening


def test_pooled_whitening_makes_the_within_distribution_covariance_the_identity():
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    means = 5 * torch.randn(40, 1, 6, generator=gen, dtype=torch.float64)  # spread apart: must not enter
    samples = means + torch.randn(40, 500, 6, generator=gen, dtype=torch.float64) @ mix
    p = pooled_whitening(samples, ridge=1e-9)
    centred = (samples - samples.mean(1, keepdim=True)).reshape(-1, 6) @ p
    within = centred.T @ centred / len(centred)  # isotropic: a multiple of the identity (up to the ridge's 1e-6 of
    # the overall top eigenvalue and the shrinkage, d / (d + dof) = 3e-4 of the mean eigenvalue here)
    torch.testing.assert_close(within / within.diagonal().mean(), torch.eye(6, dtype=torch.float64), atol=1e-2, rtol=0)
    overall = (samples.reshape(-1, 6) - samples.reshape(-1, 6).mean(0)) @ p
    assert float(overall.pow(2).mean()) == pytest.approx(1.0)  # unit variance per dimension overall
    with pytest.raises(ValueError, match="expects"):
        pooled_whitening(samples[:, :1])


def test_the_ridge_caps_the_gain_of_directions_the_concepts_do_not_vary_in():
    samples = torch.zeros(3, 10, 4, dtype=torch.float64)
    samples[..., 0] = torch.linspace(-1, 1, 10)  # all variance on one axis
    p = pooled_whitening(samples, ridge=1e-2)
    assert torch.isfinite(p).all() and 1 < float(p[1, 1] / p[0, 0]) <= (1 + 1e-2) ** 0.5 / 1e-2**0.5
    # no variance within the distributions at all (a causal encoder, shared prefixes): still finite, unit overall
    frozen = torch.arange(12.0, dtype=torch.float64).reshape(3, 1, 4).expand(3, 5, 4)
    p = pooled_whitening(frozen)
    overall = (frozen.reshape(-1, 4) - frozen.reshape(-1, 4).mean(0)) @ p
    assert torch.isfinite(p).all() and float(overall.pow(2).mean()) == pytest.approx(1.0)


def test_few_degrees_of_freedom_shrink_the_whitening_towards_isotropic():
    # the same anisotropic covariance estimated from 2 x 4 samples and from 2 x 4,000: the scarce estimate's
    # eigenvalues are pulled towards their mean, so it amplifies its weakest direction less
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([10.0, 1.0, 0.1], dtype=torch.float64)
    gain = {}
    for n in (4, 4000):
        samples = torch.randn(2, n, 3, generator=gen, dtype=torch.float64) * scale
        p = pooled_whitening(samples, ridge=1e-9)
        gain[n] = float(torch.linalg.eigvalsh(p).max() / torch.linalg.eigvalsh(p).min())
    assert gain[4000] > 50 and gain[4] < 0.5 * gain[4000]  # unshrunk: 100
    two = pooled_whitening([torch.randn(2, 5, 3, generator=gen), torch.randn(3, 7, 3, generator=gen)])
    assert two.shape == (3, 3) and torch.isfinite(two).all()  # groups of different sizes


def test_kmeans_finds_each_sets_clusters_and_own_distances_measure_to_them():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[[0.0, 0.0], [10.0, 0.0]], [[0.0, 5.0], [-5.0, -5.0]]])  # two sets, two clusters each
    points = centres.repeat_interleave(20, 1) + 0.1 * torch.randn(2, 40, 2, generator=gen)
    found = kmeans(points, 2, generator=gen)
    for s in range(2):  # every true centre has a found centre within 0.1
        assert torch.cdist(centres[s], found[s]).min(1).values.max() < 0.1
    own = own_distances(points, found)
    assert own.shape == (2, 40) and own.max() < 0.4
    with pytest.raises(ValueError, match="must be in"):
        kmeans(points, 41)


def memory(candidates: int = 2) -> ConceptMemory:
    """Two distributions of one centre each in 3-d (whitened at their means), whitening that stretches the first
    axis by 10, radius 1."""
    whiten = torch.diag(torch.tensor([10.0, 1.0, 1.0]))
    means = torch.tensor([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    values = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 0.0]])
    return ConceptMemory(whiten, means, means[:, None], values, 1.0, candidates)


def test_memory_rewrites_tokens_within_the_radius_of_a_key_in_whitened_space():
    x = torch.tensor([[0.0, 0.5, 0.0], [0.2, 0.0, 0.0], [0.0, 5.9, 0.0], [0.0, 2.5, 0.0]])
    # 0.2 along the stretched axis is 2 whitened units away: outside; the others are within 1 of keys 0 / 1
    delta = memory().rewrite(x[None])[0]
    assert delta.tolist() == [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_the_residual_sets_how_much_of_a_rewritten_tokens_own_offset_survives():
    """x + δ = c + ρ x on rewritten tokens (c holds the shift and (1 - ρ) μ_t): ρ = 1 is a pure shift, ρ = 0 sends
    every rewritten token of a distribution to one point, whatever its context; kept tokens are untouched."""
    x = torch.tensor([[[0.0, 0.5, 0.0], [0.0, 0.9, 0.3], [0.2, 0.0, 0.0]]])  # two within the radius, one outside
    values = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 0.0]])
    means = torch.tensor([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    whiten = torch.diag(torch.tensor([10.0, 1.0, 1.0]))
    for rho in (0.0, 0.25, 1.0):
        mem = ConceptMemory(whiten, means, means[:, None], values, 1.0, 2, residual=rho)
        out = x + mem.rewrite(x)
        assert torch.allclose(out[0, :2], values[0] + rho * x[0, :2])
        assert torch.equal(out[0, 2], x[0, 2])
    with pytest.raises(ValueError, match="residual"):
        ConceptMemory(whiten, means, means[:, None], values, 1.0, 2, residual=1.5)


def test_memory_searches_a_tensor_once_and_again_after_it_changes():
    mem, x = memory(), torch.zeros(2, 3)
    first = mem.rewrite(x)
    assert mem.rewrite(x) is first and mem.rewrite(x.clone()) is first  # the same tokens: the cached rewrite
    x[0, 1] = 5.0  # changed in place
    assert mem.rewrite(x)[0].tolist() == [-1.0, 0.0, 0.0]
    with torch.inference_mode():  # inference tensors (generation) have no version counter
        y = torch.zeros(2, 3)
        assert mem.rewrite(y)[0].tolist() == [1.0, 2.0, 3.0]
        y[0, 1] = 5.0
        assert mem.rewrite(y)[0].tolist() == [-1.0, 0.0, 0.0]


def test_memory_searches_the_centres_of_the_distributions_with_the_nearest_means():
    means = torch.tensor([[0.0], [4.0]])
    centres = torch.tensor([[[0.0]], [[1.5]]])  # distribution 1 has a centre near distribution 0's mean
    x = torch.tensor([[1.4]])  # nearest mean: 0 (1.4 away); nearest centre: 1's (0.1 away)
    one, two = (ConceptMemory(torch.eye(1), means, centres, torch.eye(2)[:, :1], 1.0, m) for m in (1, 2))
    assert one.detect(x)[0].tolist() == [False] and two.detect(x)[0].tolist() == [True]
    assert two.detect(x)[1].tolist() == [1]


def test_nearest_measures_to_the_candidates_centres_whatever_the_radius():
    mem = memory()
    x = torch.tensor([[0.3, 0.0, 0.0], [0.0, 8.0, 0.0]])  # whitened: 3 from key 0; 3 from key 1
    assert mem.nearest(x).tolist() == pytest.approx([3.0, 3.0])
    assert not mem.detect(x)[0].any() and mem.nearest(x[:0]).shape == (0,)


def test_memory_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="disagree"):
        ConceptMemory(torch.eye(3), torch.zeros(2, 3), torch.zeros(2, 1, 3), torch.zeros(3, 3), 1.0, 1)
    with pytest.raises(ValueError, match="candidates"):
        ConceptMemory(torch.eye(3), torch.zeros(2, 3), torch.zeros(2, 1, 3), torch.zeros(2, 3), 1.0, 0)


def test_keyed_eraser_adds_w_delta_and_its_nir_student_restores_exactly():
    gen = torch.Generator().manual_seed(1)
    mem = memory()
    w = torch.randn(5, 3, generator=gen)
    x = torch.tensor([[0.0, 0.3, 0.0], [4.0, 4.0, 4.0], [0.0, 5.0, 0.5]]) * torch.tensor([[1.0], [30.0], [1.0]])
    teacher = KeyedEraser(mem, 3, 5).bind(w)
    torch.testing.assert_close(teacher(x), mem.rewrite(x) @ w.T)
    assert teacher(x)[1].abs().max() == 0  # far from every key: untouched
    left, right = torch.randn(5, generator=gen), torch.randn(3, generator=gen)
    corrupted = w + torch.outer(left, right)
    student = teacher.with_restore(left, right).bind(corrupted)
    # W̃ x + Δ_s(x) = W x + Δ_t(x) for every token, at any scale
    torch.testing.assert_close(x @ corrupted.T + student(x), x @ w.T + teacher(x), atol=1e-4, rtol=1e-5)
    assert set(student.own_state()) == {"restore_in", "restore_out"} and student.memory is mem


def test_keyed_eraser_needs_a_bound_weight_of_its_shape():
    eraser = KeyedEraser(memory(), 3, 5)
    with pytest.raises(RuntimeError, match="bind"):
        eraser(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="expected"):
        eraser.bind(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="holds 3-d tokens"):
        KeyedEraser(memory(), 4, 5)


def test_the_relative_rule_keeps_a_token_that_a_preserved_key_is_nearer_to():
    centres = torch.tensor([[[0.0, 0.0]]])
    values = torch.tensor([[1.0, 1.0]])
    preserved = torch.tensor([[2.0, 0.0]])
    tokens = torch.tensor([[0.5, 0.0], [1.5, 0.0], [0.0, 1.5], [2.5, 0.0]])
    radius_only = ConceptMemory(torch.eye(2), centres[:, 0], centres, values, 2.0, 1)
    relative = ConceptMemory(torch.eye(2), centres[:, 0], centres, values, 2.0, 1, preserved)
    assert radius_only.detect(tokens)[0].tolist() == [True, True, True, False]
    # (1.5, 0) is within θ of the target but nearer the preserved key: kept; (0, 1.5) is nearer the target
    assert relative.detect(tokens)[0].tolist() == [True, False, True, False]
    assert relative.describe()["preserved"] == 1 and radius_only.describe()["preserved"] == 0
    empty = ConceptMemory.empty(2, 1, 1, 1, preserved=1)
    empty.load_state_dict(relative.state_dict())
    assert empty.detect(tokens)[0].tolist() == [True, False, True, False]


def test_a_concept_of_several_sub_tokens_is_rewritten_only_where_all_of_them_are_present():
    # concept 0 = distributions 0 and 1 (two words), concept 1 = distribution 2
    centres = torch.tensor([[[0.0, 0.0]], [[10.0, 0.0]], [[0.0, 10.0]]])
    values = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    memory = ConceptMemory(torch.eye(2), centres[:, 0], centres, values, 1.0, 3, concept=torch.tensor([0, 0, 1]))
    both = torch.tensor([[[0.1, 0.0], [10.1, 0.0], [50.0, 50.0]]])  # both words of concept 0, and a stranger
    one = torch.tensor([[[0.1, 0.0], [30.0, 0.0], [0.0, 10.2]]])  # only its first word; concept 1 whole
    hit, owner = memory.detect_prompts(torch.cat([both, one]))
    assert hit.tolist() == [[True, True, False], [False, False, True]]
    assert owner[0, :2].tolist() == [0, 1] and int(owner[1, 2]) == 2
    assert memory.detect(one[0])[0].tolist() == [True, False, True]  # token by token, the first word alone hits
    delta = memory.rewrite(torch.cat([both, one]))
    torch.testing.assert_close(delta[0, :2], values[:2]) and torch.testing.assert_close(delta[1, 2], values[2])
    assert delta[1, :2].abs().sum() == 0
