"""The MoEraser and the NIR helpers (specs/etc.md §4-§5), on tiny shapes. The hook that adds an eraser to a
projector of a real pipeline is tested with the artifacts (tests/test_artifacts.py)."""

import math

import pytest
import torch

from erasekit.methods.etc.moeraser import (
    MoEraser,
    MoEraserConfig,
    RMSNorm,
    layer_weights,
    nir_factors,
    nir_noise,
    restoring_eraser,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = MoEraserConfig(experts=4, hidden=8, top_k=2)


def randomise(module: MoEraser, seed: int = 0) -> MoEraser:
    """Give the zero-initialised router and output projections random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (module.router.weight, module.router.bias, module.w_out, module.b_out):
            p.copy_(torch.randn(p.shape, generator=g))
    return module


def test_rmsnorm_normalises_the_last_dim():
    x = torch.randn(5, 12) * 7
    y = RMSNorm(12)(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(5), atol=1e-4)


def test_moeraser_is_zero_at_init():
    torch.manual_seed(0)
    eraser = MoEraser(10, 6, SMALL)
    assert (eraser.d_in, eraser.d_out) == (10, 6)
    x = torch.randn(3, 7, 10)
    for train in (True, False):
        eraser.train(train)
        assert torch.equal(eraser(x), torch.zeros(3, 7, 6))


def test_one_optimizer_step_moves_delta_and_lowers_the_loss():
    torch.manual_seed(1)
    eraser = MoEraser(10, 6, SMALL)
    x, target = torch.randn(64, 10), torch.randn(64, 6)
    opt = torch.optim.AdamW(eraser.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        return (eraser(x) - target).pow(2).mean()

    eraser.eval()
    with torch.no_grad():
        before = loss()
    eraser.train()
    (loss() + eraser.aux_loss()).backward()
    opt.step()
    eraser.eval()
    with torch.no_grad():
        after = loss()
        assert eraser(x).abs().max() > 0
    assert after < before


@pytest.mark.parametrize("k", [1, 2])
def test_top_k_gates_have_k_nonzeros_summing_to_one(k):
    torch.manual_seed(2)
    module = randomise(MoEraser(10, 6, MoEraserConfig(experts=5, hidden=8, top_k=k)))
    x = torch.randn(2, 50, 10)
    for train in (False, True):
        gates = module.train(train).gates(x)
        assert gates.shape == (2, 50, 5)
        assert torch.equal((gates > 0).sum(-1), torch.full((2, 50), k))
        assert torch.allclose(gates.sum(-1), torch.ones(2, 50))
    # the gates select the k largest router logits
    module.eval()
    logits = module.router(module.router_norm(x))
    assert torch.equal(module.gates(x).topk(k).indices.sort(-1).values, logits.topk(k).indices.sort(-1).values)


def test_forward_matches_the_spec_formula_expert_by_expert():
    """Δ = (1/H)[(1 - κ) Σ_e g_e (h_e O_e + o_e) + κ (h_s O_s + o_s)], h = SiLU(x̃ A + a) ⊙ (x̃ B + b)."""
    torch.manual_seed(7)
    cfg = MoEraserConfig(experts=3, hidden=4, top_k=2, shared_weight=0.3)
    module = randomise(MoEraser(6, 5, cfg)).eval()
    x = torch.randn(9, 6)
    xn = module.norm(x)
    logits = module.router(module.router_norm(x))
    top = logits.topk(2, dim=-1)
    h = cfg.hidden
    expected = torch.zeros(9, 5)
    for t in range(9):
        for e in range(cfg.experts + 1):
            cols = slice(e * h, (e + 1) * h)
            hidden = torch.nn.functional.silu(xn[t] @ module.w_gate[:, cols] + module.b_gate[cols])
            hidden = hidden * (xn[t] @ module.w_up[:, cols] + module.b_up[cols])
            out = hidden @ module.w_out[e] + module.b_out[e]
            if e == cfg.experts:  # the shared expert
                expected[t] += cfg.shared_weight * out
            elif e in top.indices[t]:
                gate = torch.softmax(top.values[t], 0)[(top.indices[t] == e).nonzero()[0, 0]]
                expected[t] += (1 - cfg.shared_weight) * gate * out
    with torch.no_grad():
        assert torch.allclose(module(x), expected / h, atol=1e-5)


def test_router_noise_only_in_training_mode():
    torch.manual_seed(3)
    module = randomise(MoEraser(10, 6, SMALL))
    x = torch.randn(200, 10)
    module.eval()
    assert torch.equal(module(x), module(x))
    module.train()
    assert not torch.equal(module.gates(x), module.gates(x))
    quiet = randomise(MoEraser(10, 6, MoEraserConfig(experts=4, hidden=8, router_noise=0.0))).train()
    assert torch.equal(quiet(x), quiet(x))


def test_aux_loss_is_finite_non_negative_and_trains_the_router():
    torch.manual_seed(4)
    module = MoEraser(10, 6, SMALL)
    assert module.aux_loss().item() == 0.0  # no forward yet, output weights zero
    randomise(module).train()
    module(torch.randn(100, 10))
    aux = module.aux_loss()
    assert math.isfinite(aux.item()) and aux.item() >= 0
    aux.backward()
    assert module.router.weight.grad is not None and module.router.weight.grad.abs().max() > 0
    module.eval()
    module(torch.randn(100, 10))
    assert math.isfinite(module.aux_loss().item()) and module.aux_loss().item() >= 0


def test_decorrelation_is_mean_squared_cosine_of_output_weights():
    module = MoEraser(4, 3, MoEraserConfig(experts=3, hidden=2))
    assert module.decorrelation().item() == 0.0  # all-zero output weights
    with torch.no_grad():
        module.w_out.zero_()
        module.w_out[:3, 0, 0] = 1.0  # three identical experts: every cosine is 1
    assert module.decorrelation().item() == pytest.approx(1.0)
    with torch.no_grad():
        module.w_out.zero_()
        for e in range(3):
            module.w_out[e, 0, e] = 1.0  # orthogonal experts
    assert module.decorrelation().item() == pytest.approx(0.0)


def test_nir_noise_is_seeded_rank_one_and_has_the_documented_norm():
    torch.manual_seed(6)
    weights = {"b.to_v": torch.randn(8, 12), "a.to_k": torch.randn(8, 12) * 3, "c.to_k": torch.randn(5, 7)}
    noise = nir_noise(weights, rho=0.5, seed=11)
    assert set(noise) == set(weights)
    again = nir_noise(dict(reversed(list(weights.items()))), rho=0.5, seed=11)  # order-independent
    assert all(torch.equal(noise[n], again[n]) for n in weights)
    other = nir_noise(weights, rho=0.5, seed=12)
    assert all(not torch.allclose(noise[n], other[n]) for n in weights)
    # documented draw: v per d_in (increasing), then u_l by sorted name; ||N|| = ρ ||W|| ||u|| ||v|| / sqrt(d_in d_out)
    g = torch.Generator().manual_seed(11)
    v = {7: torch.randn(7, generator=g), 12: torch.randn(12, generator=g)}
    for name in sorted(weights):
        d_out, d_in = weights[name].shape
        u = torch.randn(d_out, generator=g)
        expected = 0.5 * torch.linalg.matrix_norm(weights[name]) * u.norm() * v[d_in].norm() / math.sqrt(d_in * d_out)
        assert torch.linalg.matrix_norm(noise[name]) == pytest.approx(float(expected), rel=1e-5)
        assert torch.allclose(
            noise[name], 0.5 * weights[name].norm() / math.sqrt(d_in * d_out) * torch.outer(u, v[d_in])
        )
        assert torch.linalg.matrix_rank(noise[name]) == 1
    # v is shared by layers with the same d_in: same row direction
    cos = torch.nn.functional.cosine_similarity(noise["a.to_k"][0], noise["b.to_v"][0], dim=0)
    assert abs(float(cos)) == pytest.approx(1.0, abs=1e-6)


def test_layer_weights_uniform_and_spectral():
    weights = {"a": torch.diag(torch.tensor([1.0, 0.5])), "b": torch.diag(torch.tensor([3.0, 2.0, 1.0]))}
    assert layer_weights(weights, "uniform") == {"a": 1.0, "b": 1.0}
    spectral = layer_weights(weights, "spectral")
    assert spectral["a"] == pytest.approx(0.5) and spectral["b"] == pytest.approx(1.5)  # σ_max 1 and 3, mean 2
    with pytest.raises(ValueError):
        layer_weights(weights, "frobenius")


def test_the_restoring_eraser_undoes_the_noise_exactly_on_tokens_of_any_scale():
    torch.manual_seed(7)
    weights = {"to_k": torch.randn(8, 12), "to_v": torch.randn(6, 12)}
    factors = nir_factors(weights, rho=5.0, seed=3)
    x = torch.randn(50, 12) * torch.logspace(-1, 2, 50)[:, None]  # RMSNorm drops this scale; N x keeps it
    for name, w in weights.items():
        teacher = randomise(MoEraser(12, w.shape[0], SMALL), seed=1).eval()
        student = restoring_eraser(teacher, *factors[name]).eval()
        corrupted = w + torch.outer(*factors[name])
        assert (x @ corrupted.T - x @ w.T).norm() > 2 * (x @ w.T).norm()  # the corruption alone is large
        gap = x @ corrupted.T + student(x) - (x @ w.T + teacher(x))
        assert gap.norm() < 1e-5 * (x @ w.T).norm()
        assert student.config.restore_rank == 1 and teacher.config.restore_rank == 0
        assert torch.equal(torch.outer(*factors[name]), nir_noise(weights, rho=5.0, seed=3)[name])
