"""Shared fixtures and marker registration for the kernel tests.

Markers are registered here (``gpu``: needs CUDA, skipped otherwise; ``slow``: long-running) until
the project's pyproject.toml owns them.
"""

from __future__ import annotations

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: long-running test, excluded from the fast default run")


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same RNG state, so failures reproduce in isolation."""
    torch.manual_seed(1234)


def _random_scan_inputs(
    B: int,
    T: int,
    D: int,
    dtype: torch.dtype = torch.float64,
    zeros: bool = True,
    h0: bool = False,
    requires_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gates of both signs with |a| <= 1 (some exactly 0), inputs N(0, 1), optional h0."""
    a = torch.randn(B, T, D, dtype=dtype)
    a = a / a.abs().clamp_min(1.0)
    if zeros:
        a = torch.where(torch.rand(B, T, D) < 0.05, torch.zeros_like(a), a)
    b = torch.randn(B, T, D, dtype=dtype)
    s = torch.randn(B, D, dtype=dtype) if h0 else None
    if requires_grad:
        a.requires_grad_()
        b.requires_grad_()
        if s is not None:
            s.requires_grad_()
    return a, b, s


@pytest.fixture
def scan_inputs():
    """Factory fixture: ``scan_inputs(B, T, D, dtype=..., zeros=..., h0=..., requires_grad=...)``."""
    return _random_scan_inputs
