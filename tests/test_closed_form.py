"""Properties of the closed-form solvers (specs/erasepro.md sections 1-2), without any model."""

import pytest
import torch

from erasekit.editing.closed_form import relative_residual, uce, zero_residual


def preservation_metric(d_in: int, preserve: torch.Tensor | None, ridge: float, s_p: float) -> torch.Tensor:
    """M = ridge I + s_p C_P C_P^T, formed explicitly: what the solvers must behave as if they used."""
    m = ridge * torch.eye(d_in, dtype=torch.float64)
    return m if preserve is None else m + s_p * preserve.double() @ preserve.double().T


def problem(d_out=24, d_in=32, n=10, p=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(d_out, d_in, generator=g)
    x = torch.randn(d_in, n, generator=g)
    y = x + 0.8 * torch.randn(d_in, n, generator=g)
    c = torch.randn(d_in, p, generator=g)
    return w0, x, y, c


@pytest.mark.parametrize("weighted", [False, True])
def test_zero_residual_is_exact_when_x_has_full_column_rank(weighted):
    w0, x, y, c = problem()
    solve = zero_residual(w0.double(), x, y, preserve=c if weighted else None)
    assert solve.residual <= 1e-6
    assert solve.rank == solve.constraints == 10 and not solve.least_squares
    assert relative_residual(solve.weight, w0, x, y) == pytest.approx(solve.residual)


def test_zero_residual_leaves_the_orthogonal_complement_untouched():
    w0, x, y, _ = problem()
    w = zero_residual(w0.double(), x, y).weight
    q, _ = torch.linalg.qr(x.double(), mode="complete")
    orthogonal = q[:, x.shape[1] :]  # basis of span(X)^perp
    assert torch.linalg.matrix_norm((w - w0.double()) @ orthogonal) < 1e-10


def test_weighted_change_vanishes_on_m_orthogonal_inputs():
    w0, x, y, c = problem()
    m = preservation_metric(x.shape[0], c, ridge=0.5, s_p=1.0)
    w = zero_residual(w0.double(), x, y, preserve=c, ridge=0.5, s_p=1.0).weight
    # v is M-orthogonal to span(X) iff X^T M^-1 v = 0, i.e. v = M u with u orthogonal to span(X).
    q, _ = torch.linalg.qr(x.double(), mode="complete")
    v = m @ q[:, x.shape[1] :]
    assert torch.linalg.matrix_norm((w - w0.double()) @ v) < 1e-8 * torch.linalg.matrix_norm(v)


def test_minimum_norm_among_all_exact_solutions():
    w0, x, y, _ = problem()
    w = zero_residual(w0.double(), x, y).weight
    # Any other solution adds Z with Z X = 0: it can only be larger.
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(x.double(), mode="complete")
    z = torch.randn(w0.shape[0], x.shape[0] - x.shape[1], generator=g, dtype=torch.float64) @ q[:, x.shape[1] :].T
    assert relative_residual(w + z, w0, x, y) < 1e-6
    assert torch.linalg.matrix_norm(w + z - w0) > torch.linalg.matrix_norm(w - w0)


def test_weighted_form_equals_uce_at_large_erase_weight():
    w0, x, y, c = problem()
    pro = zero_residual(w0.double(), x, y, preserve=c, ridge=0.5, s_p=1.0).weight
    limit = uce(w0.double(), x, y, preserve=c, ridge=0.5, s_e=1e8, s_p=1.0).weight
    assert torch.allclose(pro, limit, rtol=0, atol=1e-5 * pro.abs().max())


def test_uce_leaves_a_residual_that_shrinks_with_s_e():
    w0, x, y, c = problem()
    residuals = [uce(w0, x, y, preserve=c, s_e=s).residual for s in (0.1, 1.0, 10.0, 1000.0)]
    assert residuals[0] > residuals[1] > residuals[2] > residuals[3]
    assert residuals[1] > 1e-3  # UCE at its default weights is not exact: what ErasePro removes


def test_uce_matches_gradient_descent_on_its_objective():
    w0, x, y, c = problem(d_out=6, d_in=8, n=3, p=2)
    w0, x, y, c = (t.double() for t in (w0, x, y, c))
    ridge, s_e, s_p = 0.5, 1.0, 1.0
    w = w0.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def objective():
        optimizer.zero_grad()
        loss = s_e * ((w @ x - w0 @ y) ** 2).sum() + s_p * ((w @ c - w0 @ c) ** 2).sum() + ridge * ((w - w0) ** 2).sum()
        loss.backward()
        return loss

    for _ in range(5):
        optimizer.step(objective)
    closed = uce(w0, x, y, preserve=c, ridge=ridge, s_e=s_e, s_p=s_p).weight
    assert torch.allclose(w.detach(), closed, atol=1e-7)


def test_more_constraints_than_inputs_is_least_squares_and_reported():
    w0, x, y, _ = problem(d_in=8, n=20)
    solve = zero_residual(w0, x, y)
    assert solve.least_squares and solve.rank == 8
    # still the least-squares optimum: no W does better than W0 Y X^+ X
    best = (w0.double() @ y.double()) @ torch.linalg.pinv(x.double()) @ x.double()
    target = w0.double() @ y.double()
    floor = float(torch.linalg.matrix_norm(best - target) / torch.linalg.matrix_norm(target))
    assert solve.residual == pytest.approx(floor, rel=1e-6)


def test_repeated_columns_are_one_constraint_each():
    w0, x, y, _ = problem()
    x2, y2 = torch.cat([x, x[:, :3]], 1), torch.cat([y, y[:, :3]], 1)
    solve = zero_residual(w0.double(), x2, y2)
    assert solve.residual < 1e-6 and solve.rank == solve.constraints == 10 and not solve.least_squares
    assert torch.allclose(solve.weight, zero_residual(w0.double(), x, y).weight, atol=1e-10)


@pytest.mark.parametrize("weighted", [False, True])
def test_repeats_keep_their_weight_in_the_least_squares_objective(weighted):
    # N > d_in: the least-squares fit weights a column repeated k times k-fold, as if the repeats were all there
    w0, x, y, c = problem(d_in=8, n=20)
    repeated = torch.cat([x, x[:, :4], x[:, :2]], 1).double(), torch.cat([y, y[:, :4], y[:, :2]], 1).double()
    g = torch.Generator().manual_seed(5)
    noise = 1e-9 * torch.randn(repeated[0].shape, generator=g, dtype=torch.float64)
    nudged = (repeated[0] + noise, repeated[1])  # no exact repeats
    preserve = c if weighted else None
    exact, near = zero_residual(w0, *repeated, preserve), zero_residual(w0, *nudged, preserve)
    assert exact.constraints == 20 and near.constraints == 26
    assert torch.allclose(exact.weight, near.weight, atol=1e-5)
    assert exact.residual == pytest.approx(near.residual, rel=1e-5)


def test_distinct_columns_keeps_first_occurrences_scaled_by_their_multiplicity():
    from erasekit.editing.closed_form import distinct_columns

    x = torch.tensor([[1.0, 2.0, 1.0, 1.0, 3.0], [0.0, 1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[5.0, 6.0, 5.0, 7.0, 6.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    # column 2 repeats column 0; column 3 has column 0's x but another y: a different constraint, kept
    assert distinct_columns(x[:, :0], y[:, :0])[0].shape == (2, 0)  # no columns: nothing to merge
    dx, dy = distinct_columns(x, y)
    assert torch.equal(dx, torch.stack([x[:, 0] * 2**0.5, x[:, 1], x[:, 3], x[:, 4]], 1))
    assert torch.equal(dy, torch.stack([y[:, 0] * 2**0.5, y[:, 1], y[:, 3], y[:, 4]], 1))


@pytest.mark.parametrize("weighted", [False, True])
def test_a_float32_weight_keeps_the_constraint_on_ill_conditioned_targets(weighted):
    # near-duplicate target columns, as a text encoder's tokens are: float32 products of (W0 L) R left 1e-6 here
    w0, x, y, c = problem(d_out=64, d_in=256, n=40, p=30)
    g = torch.Generator().manual_seed(1)
    x[:, 20:] = x[:, :20] + 0.02 * torch.randn(256, 20, generator=g)
    y[:, 20:] = y[:, :20] + 0.02 * torch.randn(256, 20, generator=g)
    assert torch.linalg.cond(x) > 100
    exact = zero_residual(w0.double(), x, y, preserve=c if weighted else None)
    fast = zero_residual(w0, x, y, preserve=c if weighted else None)
    assert fast.weight.dtype == torch.float32 and exact.residual <= 1e-9 and fast.residual <= 1e-6
    assert relative_residual(fast.weight, w0, x, y) <= 1e-7  # the stored float32 weight, in float64 arithmetic
    assert torch.allclose(fast.weight.double(), exact.weight, rtol=0, atol=1e-5 * float(exact.weight.abs().max()))


def test_weight_keeps_its_dtype():
    w0, x, y, _ = problem()
    assert zero_residual(w0.half(), x, y).weight.dtype == torch.float16
    assert uce(w0, x, y).weight.dtype == torch.float32


@pytest.mark.parametrize("p", [5, 50])  # fewer columns than d_in: Woodbury; more: Cholesky
def test_metric_solve_matches_the_explicit_inverse(p):
    from erasekit.editing.closed_form import solve_metric

    w0, x, _, _ = problem(d_in=32, p=p)
    c = torch.randn(32, p, generator=torch.Generator().manual_seed(3))
    m = preservation_metric(32, c, ridge=0.5, s_p=0.7)
    expected = torch.linalg.solve(m, x.double())
    assert torch.allclose(solve_metric(x, c, ridge=0.5, s_p=0.7), expected, atol=1e-9)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("row_rank", [8, 6])  # 6: X X^T is singular, and the metric picks the edit on its null space
def test_more_columns_than_inputs_matches_the_n_by_n_formula_through_d_by_d_matrices(weighted, row_rank):
    # N > d_in goes through X X^T (d_in x d_in), never an N x N matrix: thousands of concepts fit in memory
    w0, x, y, c = problem(d_in=8, n=30)
    x[:, -5:] = x[:, :5]  # rank-deficient in the columns, as repeated prompts are
    x[row_rank:] = torch.randn(8 - row_rank, row_rank, generator=torch.Generator().manual_seed(2)) @ x[:row_rank]
    preserve = c if weighted else None
    p = torch.linalg.inv(preservation_metric(8, preserve, 0.5, 1.0)) if weighted else torch.eye(8, dtype=torch.float64)
    xd, yd = x.double(), y.double()
    right = torch.linalg.pinv(xd.T @ p @ xd, hermitian=True) @ xd.T @ p
    expected = w0.double() + w0.double() @ (yd - xd) @ right
    solve = zero_residual(w0, x, y, preserve)
    assert torch.allclose(solve.weight.double(), expected, atol=1e-4, rtol=1e-4)
    assert solve.residual == pytest.approx(relative_residual(solve.weight, w0, x, y), rel=1e-4)


def test_uce_residual_with_more_columns_than_inputs_is_the_measured_one():
    w0, x, y, c = problem(d_in=8, n=30)
    solve = uce(w0, x, y, c)
    assert solve.residual == pytest.approx(relative_residual(solve.weight, w0, x, y), rel=1e-4)
    assert solve.rank == 8
