"""Scan kernels: one linear-recurrence primitive and the recurrences built on it.

Public API (all on ``(B, T, D)`` tensors, time on dim 1):

- :func:`linear_scan` -- ``h_t = a_t * h_{t-1} + b_t``; backends ``reference`` / ``torch`` / ``triton``.
- :func:`selective_scan` -- Mamba-1 S6 (input-dependent ``delta``, ``B``, ``C``; diagonal ``A``);
  backends ``cpp`` (fused CPU kernel, compiled at first use) / ``triton`` / ``torch`` / ``reference``.
- :func:`log_linear_scan` -- coefficients given as logs (minGRU / minLSTM), plus coefficient helpers.
- :func:`newton_scan` -- nonlinear diagonal recurrences solved by Newton steps of linear scans.

Triton is imported only when a Triton backend actually runs, so importing this package works on
machines without it (and does not fix Triton's interpreter mode as a side effect).
"""

from clplat.kernels.dispatch import BACKENDS, linear_scan, resolve_backend, triton_available
from clplat.kernels.logspace import log_g, log_linear_scan, mingru_log_coeffs, minlstm_log_coeffs
from clplat.kernels.newton import NewtonInfo, diag_gru_cell, diag_gru_jacobian, newton_scan
from clplat.kernels.reference import linear_scan_ref, selective_scan_ref
from clplat.kernels.selective import SELECTIVE_BACKENDS, resolve_selective_backend, selective_scan
from clplat.kernels.selective_cpu import cpu_kernel_available

__all__ = [
    "BACKENDS",
    "NewtonInfo",
    "SELECTIVE_BACKENDS",
    "cpu_kernel_available",
    "diag_gru_cell",
    "diag_gru_jacobian",
    "linear_scan",
    "linear_scan_ref",
    "log_g",
    "log_linear_scan",
    "mingru_log_coeffs",
    "minlstm_log_coeffs",
    "newton_scan",
    "resolve_backend",
    "resolve_selective_backend",
    "selective_scan",
    "selective_scan_ref",
    "triton_available",
]
