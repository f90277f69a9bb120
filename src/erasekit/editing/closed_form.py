"""Closed-form edits of one linear map (specs/erasepro.md sections 1-2), as pure functions on tensors.

Notation: ``w0`` the original weight (d_out x d_in); ``x`` target features (d_in x N); ``y`` anchor
features (d_in x N); ``preserve`` preserved features (d_in x P). A feature ``c`` maps to ``W c``.
Every solve runs in float64 with an explicit ridge (features captured in half precision are upcast), on the
features' device, or for the weights on their device where it supports float64 (CUDA, the CPU) and else on the CPU
(MPS); each returns the new weight (in ``w0``'s dtype, on its device) and the residual it achieved,
``||W X - W0 Y||_F / ||W0 Y||_F``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from erasekit.utils.devices import solve_device

Tensor = torch.Tensor


@dataclass(frozen=True)
class Solve:
    weight: Tensor  # the new weight, same dtype and device as w0
    residual: float  # ||W X - W0 Y||_F / ||W0 Y||_F
    delta: float  # ||W - W0||_F / ||W0||_F
    rank: int  # numerical rank of the constraint system (N when exact)
    constraints: int  # N, the number of target columns
    least_squares: bool  # True when the constraint cannot hold exactly (rank < N, e.g. N > d_in)


def f64(t: Tensor) -> Tensor:
    """``t`` in float64 where float64 runs: its device, or the CPU for a device without float64 (MPS)."""
    return t.to(solve_device(t.device), torch.float64)


def relative_residual(weight: Tensor, w0: Tensor, x: Tensor, y: Tensor) -> float:
    w, w0, x, y = (f64(t) for t in (weight, w0, x, y))
    target = w0 @ y
    return float(torch.linalg.matrix_norm(w @ x - target) / torch.linalg.matrix_norm(target).clamp_min(1e-300))


@dataclass(frozen=True)
class Transform:
    """An edit of every linear map that reads the same features, as a low-rank update W = W0 + (W0 @ left) @ right:
    left = Y - X (d_in x N), right (N x d_in); or, for N > d_in columns, left = (Y - X) X^T and right, d_in x d_in.
    Both solvers take this form."""

    left: Tensor
    right: Tensor
    # R X (N x N), for the residual W0 L (R X - I), the identity when the constraint is exact; None for more
    # columns than d_in (N x N would not fit for thousands of concepts): the residual is then (W - W0) X - W0 L
    right_x: Tensor | None
    x: Tensor  # the target features it was fitted to
    y: Tensor
    rank: int
    left_is_difference: bool = True  # False: left = (Y - X) X^T (d_in x d_in), the form for N > d_in columns

    def apply(self, w0: Tensor) -> Solve:
        device = solve_device(w0.device)
        w0d = w0.to(device, torch.float64)
        left, right = self.left.to(device), self.right.to(device)
        right_x = self.right_x.to(device) if self.right_x is not None else None
        w0_left = w0d @ left
        change = w0_left @ right
        # W X - W0 Y = change X - W0 (Y - X); with L = Y - X that is W0 L (R X - I): no product with W0 again
        w0_difference = w0_left if self.left_is_difference else w0d @ (self.y - self.x).to(device)
        if right_x is not None:
            gap = w0_difference @ right_x - w0_difference
        else:
            gap = change @ self.x.to(device) - w0_difference
        # ||W0 Y|| only scales the residual: float32 is ample for it, at half the cost of the largest product
        scale = torch.linalg.matrix_norm(w0.to(device, torch.float32) @ self.y.to(device, torch.float32)).double()
        residual = torch.linalg.matrix_norm(gap) / scale.clamp_min(1e-300)
        delta = torch.linalg.matrix_norm(change) / torch.linalg.matrix_norm(w0d).clamp_min(1e-300)
        n = self.x.shape[1]
        return Solve((w0d + change).to(w0.device, w0.dtype), float(residual), float(delta), self.rank, n, self.rank < n)


def _gram_pinv(gram: Tensor, rtol: float) -> tuple[Tensor, int, Tensor]:
    """Pseudo-inverse of a symmetric PSD Gram matrix, its numerical rank, and a basis of the null space it drops.

    Full rank (the usual case: N <= d_in independent columns) by Cholesky. When that fails, or a pivot
    falls below ``sqrt(rtol) * max`` (a margin: the pivots bound the smallest eigenvalue only from above),
    by the eigendecomposition with eigenvalues below ``rtol * max`` dropped: the constraint is then met in
    the least-squares sense. Both give the same inverse where the Gram matrix is well-conditioned.
    """
    factor, info = torch.linalg.cholesky_ex(gram)
    pivots = factor.diagonal() ** 2
    if int(info) == 0 and bool(pivots.min() > rtol**0.5 * pivots.max()):
        return torch.cholesky_inverse(factor), gram.shape[0], gram.new_zeros((gram.shape[0], 0))
    vals, vecs = torch.linalg.eigh(gram)
    keep = vals > rtol * vals.max().clamp_min(1e-300)
    return (vecs[:, keep] / vals[keep]) @ vecs[:, keep].T, int(keep.sum()), vecs[:, ~keep]


def numerical_rank(x: Tensor, rtol: float = 1e-12) -> int:
    """Rank of the columns of ``x`` from their Gram matrix (what the zero-residual solve would see), or from
    X X^T when there are more columns than rows (the same nonzero eigenvalues, a d_in x d_in matrix)."""
    xd = f64(x)
    return _gram_pinv(xd @ xd.T if xd.shape[1] > xd.shape[0] else xd.T @ xd, rtol)[1]


def solve_metric(x: Tensor, preserve: Tensor | None, ridge: float, s_p: float, erase: Tensor | None = None) -> Tensor:
    """M^-1 X for M = ridge I + s_p C C^T (+ s_e X X^T when ``erase`` = sqrt(s_e) X is given), float64.

    Through the Woodbury identity when the low-rank part has fewer columns than d_in (a small solve
    instead of a d_in x d_in factorisation), else by Cholesky.
    """
    xd = f64(x)
    parts = [c for c in ((s_p**0.5) * f64(preserve) if preserve is not None else None, erase) if c is not None]
    u = torch.cat(parts, dim=1) if parts else xd.new_zeros((x.shape[0], 0))
    if u.shape[1] < x.shape[0]:  # M^-1 = (I - U (ridge I + U^T U)^-1 U^T) / ridge
        small = ridge * torch.eye(u.shape[1], dtype=torch.float64, device=u.device) + u.T @ u
        return (xd - u @ torch.linalg.solve(small, u.T @ xd)) / ridge
    m = ridge * torch.eye(x.shape[0], dtype=torch.float64, device=u.device) + u @ u.T
    return torch.cholesky_solve(xd, torch.linalg.cholesky(m))


def distinct_columns(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(x, y) with every exactly repeated column pair kept once, scaled by sqrt(its multiplicity).

    The constraints and the least-squares objective sum_i ||W x_i - W0 y_i||^2 are unchanged, but the Gram matrix
    of the columns loses the exact singularity repeats give it (prompts sharing a prefix repeat the causal
    encoder's features), so the solve stays a Cholesky instead of an eigendecomposition.
    """
    n, device = x.shape[1], x.device
    if n < 2:
        return x, y
    # candidates: columns equal on a few rows spread over x and y (exact comparisons, no arithmetic); then verified
    rows = torch.linspace(0, x.shape[0] - 1, min(8, x.shape[0]), device=device).round().long()
    _, group, counts = torch.unique(torch.cat([x[rows], y[rows]]), dim=1, return_inverse=True, return_counts=True)
    if int(counts.max()) == 1:
        return x, y
    index = torch.arange(n, device=device)
    first = torch.full_like(counts, n).scatter_reduce(0, group, index, "amin")[group]  # each column's group's first
    later = torch.nonzero(index != first).squeeze(1)
    repeat = later[(x[:, later] == x[:, first[later]]).all(0) & (y[:, later] == y[:, first[later]]).all(0)]
    multiplicity = torch.ones(n, dtype=x.dtype, device=device).index_add_(
        0, first[repeat], torch.ones(len(repeat), dtype=x.dtype, device=device)
    )
    keep = torch.ones(n, dtype=torch.bool, device=device)
    keep[repeat] = False
    scale = multiplicity[keep].sqrt()
    return x[:, keep] * scale, y[:, keep] * scale


def zero_residual_transform(
    x: Tensor, y: Tensor, preserve: Tensor | None = None, ridge: float = 0.5, s_p: float = 1.0, rtol: float = 1e-12
) -> Transform:
    """ErasePro's constrained edit (section 2): min ||W - W0|| subject to W X = W0 Y.

    Without ``preserve``: W = W0 + W0 (Y - X) X^+ (the Frobenius-nearest weight).
    With ``preserve``: the M-weighted form, min tr((W - W0) M (W - W0)^T) s.t. W X = W0 Y,
    W = W0 + W0 (Y - X) (X^T M^-1 X)^+ X^T M^-1, M = ridge I + s_p C_P C_P^T. The change is zero on
    inputs M-orthogonal to span(X); the constraint is exact when rank(X) = N <= d_in.
    """
    xd, yd = distinct_columns(f64(x), f64(y))
    weighted = preserve is not None and preserve.shape[1]
    if xd.shape[1] > xd.shape[0]:
        return _zero_residual_dual(xd, yd, preserve, ridge, s_p, bool(weighted), rtol)
    m_inv_x = solve_metric(xd, preserve, ridge, s_p) if weighted else xd
    gram = xd.T @ m_inv_x
    gram_inv, rank, _ = _gram_pinv(gram, rtol)
    return Transform(yd - xd, gram_inv @ m_inv_x.T, gram_inv @ gram, xd, yd, rank)  # R X = G^+ G


def _zero_residual_dual(
    xd: Tensor, yd: Tensor, preserve: Tensor | None, ridge: float, s_p: float, weighted: bool, rtol: float
) -> Transform:
    """N > d_in columns: the constraint holds in the least-squares sense (N > d_in columns rarely lie in a
    common solution), and among the least-squares edits the one with the least M-weighted change, all through
    d_in x d_in matrices.

    With S = X X^T, B = (Y - X) X^T: the least-squares edits are W0 B S^+ + Z with Z X = 0. When S has full
    rank that edit is unique and the metric plays no part: Delta = W0 B S^-1 (one Cholesky). Otherwise, with
    Q a basis of S's null space, the M-least change is Delta = W0 B S^+ (I - M Q (Q^T M Q)^-1 Q^T); it equals
    R = (X^T P X)^+ X^T P of the N x N form, P = M^-1, for any M.
    """
    right, rank, null = _gram_pinv(xd @ xd.T, rtol)
    if weighted and null.shape[1]:  # M Q = ridge Q + s_p C (C^T Q), without forming M
        c = f64(preserve)
        m_null = ridge * null + s_p * (c @ (c.T @ null))
        right = right - (right @ m_null) @ torch.linalg.solve(null.T @ m_null, null.T)
    return Transform((yd - xd) @ xd.T, right, None, xd, yd, rank, left_is_difference=False)


def uce_transform(
    x: Tensor, y: Tensor, preserve: Tensor | None = None, ridge: float = 0.5, s_e: float = 1.0, s_p: float = 1.0
) -> Transform:
    """UCE (section 1): min s_e sum ||W c_i - W0 c*_i||^2 + s_p sum ||W c_j - W0 c_j||^2 + ridge ||W - W0||^2,
    W = (ridge W0 + s_e W0 Y X^T + s_p W0 C_P C_P^T)(ridge I + s_e X X^T + s_p C_P C_P^T)^-1
      = W0 + s_e W0 (Y - X) X^T (M + s_e X X^T)^-1, M = ridge I + s_p C_P C_P^T."""
    xd, yd = f64(x), f64(y)
    m_inv_x = solve_metric(xd, preserve, ridge, s_p, erase=(s_e**0.5) * xd)  # (M + s_e X X^T)^-1 X
    right = s_e * m_inv_x.T
    right_x = right @ xd if xd.shape[1] <= xd.shape[0] else None
    return Transform(yd - xd, right, right_x, xd, yd, numerical_rank(xd))


def zero_residual(w0: Tensor, x: Tensor, y: Tensor, preserve: Tensor | None = None, **options) -> Solve:
    return zero_residual_transform(x, y, preserve, **options).apply(w0)


def uce(w0: Tensor, x: Tensor, y: Tensor, preserve: Tensor | None = None, **options) -> Solve:
    return uce_transform(x, y, preserve, **options).apply(w0)
