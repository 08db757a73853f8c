"""ContinualModule details that are not covered by whole runs."""

from __future__ import annotations

import torch

from clplat.backbones import GRUBackbone
from clplat.heads import SingleHead
from clplat.module import ContinualModule, skip_graph_capture_check
from clplat.hooks import Hooks
from clplat.strategies.naive import Naive


def test_a_cpu_optimizer_steps_without_asking_for_an_accelerator(monkeypatch):
    """Under Lightning's NVML-based CUDA check every such question re-loads NVML on a CPU machine."""
    module = ContinualModule(GRUBackbone(2, 4), SingleHead(4, 3), Hooks(Naive()), lambda p: torch.optim.Adam(p, lr=0.1))
    optimizer = module.configure_optimizers()
    before = [p.detach().clone() for p in module.parameters()]

    def refuse(*args, **kwargs):
        raise AssertionError("optimizer.step() asked torch.accelerator")

    monkeypatch.setattr(torch.accelerator, "current_accelerator", refuse)
    module(torch.randn(5, 3, 2)).sum().backward()
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_an_unpatched_optimizer_still_asks(monkeypatch):
    """The test above would pass vacuously if torch stopped asking; this one notices that."""
    asked = []
    original = torch.accelerator.current_accelerator
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda *a, **k: asked.append(1) or original(*a, **k))
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([weight])
    weight.sum().backward()
    optimizer.step()
    assert asked
    skip_graph_capture_check(optimizer)
    asked.clear()
    optimizer.step()
    assert not asked


def test_lightning_hook_name_bookkeeping_stays_a_plain_attribute():
    module = ContinualModule(GRUBackbone(2, 4), SingleHead(4, 3), Hooks(Naive()), lambda p: torch.optim.SGD(p, lr=0.1))
    module._current_fx_name = "training_step"
    assert module._current_fx_name == "training_step"
    module.extra = torch.nn.Linear(2, 2)  # everything else still registers as nn.Module does
    assert "extra" in dict(module.named_children())
    assert "_current_fx_name" not in dict(module.named_parameters()) | dict(module.named_buffers())
