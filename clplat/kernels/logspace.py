"""Scans with coefficients given in log space, for minGRU / minLSTM (Feng et al., arXiv:2410.01201).

``log_linear_scan(log_a, log_b, h0)`` returns ``h`` with ``h_t = exp(log_a_t) h_{t-1} + exp(log_b_t)``.

Two methods, both accurate at long T:

- ``"linear"`` (default): exponentiate and call the core :func:`linear_scan`. For positive
  coefficients this is the most accurate choice -- the linear scan's relative error stays at a
  few ulps whatever T or the gate magnitudes -- and the fastest (two ``exp`` plus one scan). It
  cannot overflow where the result is representable, since ``0 < b_t <= h_t``; an underflowing
  gate or input contributes less than the smallest float, i.e. nothing the output could show.
- ``"heinsen"``: the log-space form of Heinsen (arXiv:2311.06281) -- ``a*_t = cumsum(log a)``,
  ``log h_t = a*_t + logcumsumexp(log b - a*)`` -- *chunked*: ``a*`` restarts every ``chunk_size``
  steps and chunks are joined by a linear-space carry (one short :func:`linear_scan` over chunk
  summaries, then ``h = h_local + exp(a*) carry``). Unchunked, the error grows like
  ``|a*_t| * eps`` (3e-4 at T=4096 in fp32); chunked, ``|a*|`` is bounded by ``chunk_size * max|log a|``.
  Kept for comparison and for callers that want the published formulation; requires finite
  ``log_b``.

Helpers build the log coefficients of minGRU/minLSTM without ever leaving log space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from clplat.kernels.dispatch import linear_scan

__all__ = ["log_g", "log_linear_scan", "mingru_log_coeffs", "minlstm_log_coeffs"]

METHODS = ("linear", "heinsen")


def log_g(x: Tensor) -> Tensor:
    """``log g(x)`` for minGRU's positive activation ``g(x) = x + 0.5 (x >= 0), sigmoid(x) (x < 0)``."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def mingru_log_coeffs(k: Tensor, h_tilde: Tensor) -> tuple[Tensor, Tensor]:
    """minGRU: ``z = sigmoid(k)``, ``a = 1 - z``, ``b = z * g(h_tilde)``, all as logs.

    Uses ``log(1 - sigmoid(k)) = -softplus(k)`` and ``log sigmoid(k) = -softplus(-k)``, which stay
    finite where the direct formulas would round to ``log(0)``.
    """
    return -F.softplus(k), -F.softplus(-k) + log_g(h_tilde)


def minlstm_log_coeffs(k_f: Tensor, k_i: Tensor, h_tilde: Tensor) -> tuple[Tensor, Tensor]:
    """minLSTM: normalised gates ``f' = f / (f + i)``, ``i' = i / (f + i)`` with ``f, i = sigmoid``.

    In logs: ``diff = softplus(-k_f) - softplus(-k_i)``, ``log f' = -softplus(diff)``,
    ``log i' = -softplus(-diff)``; ``log b = log i' + log g(h_tilde)``.
    """
    diff = F.softplus(-k_f) - F.softplus(-k_i)
    return -F.softplus(diff), -F.softplus(-diff) + log_g(h_tilde)


def _heinsen_chunked(
    log_a: Tensor, log_b: Tensor, h0: Tensor | None, chunk: int, backend: str
) -> tuple[Tensor, Tensor]:
    Bsz, T, D = log_a.shape
    n = -(-T // chunk)
    pad = n * chunk - T
    if pad:
        # Padding steps are the identity map: gate 1 (log 0), input 0 (log -inf). They sit after
        # every real step, so no prefix is all -inf and logcumsumexp's gradient stays finite.
        log_a = F.pad(log_a, (0, 0, 0, pad), value=0.0)
        log_b = F.pad(log_b, (0, 0, 0, pad), value=float("-inf"))
    la = log_a.view(Bsz, n, chunk, D)
    lb = log_b.view(Bsz, n, chunk, D)
    a_star = la.cumsum(dim=2)
    h_local = torch.exp(a_star + torch.logcumsumexp(lb - a_star, dim=2))
    decay = torch.exp(a_star)  # in (0, 1] for gates <= 1; any positive gate works
    # Chunk-level carries: chunk c maps h -> decay_last * h + h_local_last.
    ends = linear_scan(decay[:, :, -1], h_local[:, :, -1], h0, backend=backend)
    start = ends.new_zeros(Bsz, 1, D) if h0 is None else h0[:, None].to(ends.dtype)
    carry_in = torch.cat([start, ends[:, :-1]], dim=1)
    h = (h_local + decay * carry_in[:, :, None]).reshape(Bsz, n * chunk, D)[:, :T]
    return h, ends[:, -1]


def log_linear_scan(
    log_a: Tensor,
    log_b: Tensor,
    h0: Tensor | None = None,
    method: str = "linear",
    chunk_size: int = 16,
    backend: str = "auto",
    return_final: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``h_t = exp(log_a_t) * h_{t-1} + exp(log_b_t)`` on ``(B, T, D)``; returns ``h`` (linear space).

    Args:
        log_a, log_b: real ``(B, T, D)`` log coefficients (``log_b`` may be ``-inf`` with
            ``method="linear"``).
        h0: optional initial state ``(B, D)`` in linear space (any sign).
        method: ``"linear"`` or ``"heinsen"`` (see the module docstring).
        chunk_size: ``"heinsen"`` only: steps per log-space chunk (accuracy ~ chunk * |log a| * eps).
        backend: scan backend for the core/carry scan (see :func:`linear_scan`).
        return_final: also return ``h`` after the last step.
    """
    if method not in METHODS:
        raise ValueError(f"log_linear_scan: method={method!r} is not valid: allowed values are {', '.join(METHODS)}")
    for name, x in (("log_a", log_a), ("log_b", log_b)):
        if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
            raise ValueError(f"log_linear_scan: {name} must be a real floating (B, T, D) tensor")
    if log_a.shape != log_b.shape:
        raise ValueError(f"log_linear_scan: log_a and log_b shapes differ: {tuple(log_a.shape)} vs {tuple(log_b.shape)}")
    if chunk_size < 1:
        raise ValueError(f"log_linear_scan: chunk_size={chunk_size} must be >= 1")
    if method == "linear":
        h, last = linear_scan(log_a.exp(), log_b.exp(), h0, backend=backend, return_final=True)  # type: ignore[misc]
    else:
        dtype = torch.promote_types(log_a.dtype, log_b.dtype)
        h, last = _heinsen_chunked(log_a.to(dtype), log_b.to(dtype), h0, min(chunk_size, log_a.shape[1]), backend)
    return (h, last) if return_final else h
