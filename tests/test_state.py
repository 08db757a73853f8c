"""Checkpointed state declared once (clplat/state.py): what Component saves and loads generically."""

from __future__ import annotations

import io

import pytest
import torch

from clplat.buffers import ReplayBuffer
from clplat.rehearsal import RehearsalStrategy
from clplat.state import MissingStateError, Stateful
from clplat.strategy import Plugin, Strategy
from strategies.agem import AGEM
from strategies.ewc import EWC
from strategies.fpf import KFPF
from strategies.refresh import Refresh
from strategies.sharp import SHARP


class Counter(Stateful):
    """A helper with its own state (loaded in place)."""

    checkpointed = ("count",)

    def __init__(self) -> None:
        self.count = 0


class Every(Strategy):
    name = "every"
    checkpointed = ("generator", "helper", "buffer", "tensor", "tensors", "history", "pair", "steps",
                    "seconds", "label", "flag", "nothing")

    def __init__(self) -> None:
        super().__init__()
        self.generator = torch.Generator().manual_seed(0)
        self.helper = Counter()
        self.buffer = ReplayBuffer(8, "reservoir", torch.Generator().manual_seed(1))
        self.tensor = torch.zeros(3)
        self.tensors: dict[str, torch.Tensor] = {}
        self.history: list[list[int]] = []
        self.pair: tuple[torch.Tensor, int] | None = None
        self.steps, self.seconds, self.label, self.flag = 0, 0.0, "", False
        self.nothing = None
        self.scratch = torch.ones(2)  # not declared: never saved


def trained() -> Every:
    s = Every()
    torch.rand(5, generator=s.generator)
    s.helper.count = 7
    s.buffer.add(torch.rand(4, 3, 2), torch.arange(4), torch.zeros(4, dtype=torch.long))
    s.tensor = torch.arange(3.0)
    s.tensors = {"w": torch.rand(2, 2), "b": torch.rand(2)}
    s.history = [[1, 2], [3]]
    s.pair = (torch.ones(2), 5)
    s.steps, s.seconds, s.label, s.flag, s.nothing = 12, 1.5, "x", True, None
    s.scratch = torch.full((2,), 9.0)
    return s


def weights_only_copy(state: dict) -> dict:
    """The state through torch.save and ``torch.load(weights_only=True)``, as a checkpoint."""
    out = io.BytesIO()
    torch.save(state, out)
    out.seek(0)
    return torch.load(out, weights_only=True)


def test_every_kind_round_trips_through_a_weights_only_checkpoint():
    a = trained()
    state = a.state_dict()
    assert list(state) == list(Every.checkpointed)  # undeclared ``scratch`` (and Component's wiring) left out
    assert isinstance(state["generator"], torch.Tensor) and state["generator"].dtype == torch.uint8
    assert state["helper"] == {"count": 7} and state["buffer"]["size"] == 4
    b = Every()
    helper, buffer, generator = b.helper, b.buffer, b.generator
    b.load_state_dict(weights_only_copy(state))
    assert b.helper is helper and b.buffer is buffer and b.generator is generator  # loaded in place
    assert b.helper.count == 7 and len(b.buffer) == 4 and torch.equal(b.buffer.x, a.buffer.x)
    assert torch.equal(torch.rand(3, generator=b.generator), torch.rand(3, generator=a.generator))
    assert torch.equal(b.tensor, a.tensor) and set(b.tensors) == {"w", "b"}
    assert all(torch.equal(b.tensors[k], a.tensors[k]) for k in a.tensors)
    assert b.history == [[1, 2], [3]] and isinstance(b.pair, tuple) and torch.equal(b.pair[0], torch.ones(2))
    assert (b.steps, b.seconds, b.label, b.flag, b.nothing) == (12, 1.5, "x", True, None)
    assert type(b.steps) is int and type(b.seconds) is float and type(b.flag) is bool
    assert torch.equal(b.scratch, torch.ones(2))  # not declared, not restored


def test_saved_and_loaded_states_are_copies():
    a = trained()
    state = a.state_dict()
    a.tensor.add_(1)
    a.tensors["w"].zero_()
    a.history[0].append(9)
    assert torch.equal(state["tensor"], torch.arange(3.0)) and bool(state["tensors"]["w"].ne(0).any())
    assert state["history"] == [[1, 2], [3]]
    b = Every()
    b.load_state_dict(state)
    b.tensor.add_(1)
    b.history.append([4])
    assert torch.equal(state["tensor"], torch.arange(3.0)) and state["history"] == [[1, 2], [3]]


def test_declarations_add_up_along_the_class_hierarchy():
    # the rehearsal base declares the buffer once, before each method's own attributes
    assert RehearsalStrategy.checkpointed_attributes() == ("buffer",)
    assert AGEM.checkpointed_attributes() == ("buffer", "generator", "projections", "steps")
    assert KFPF.checkpointed_attributes()[0] == "buffer"
    assert Strategy.checkpointed_attributes() == () and Strategy().state_dict() == {}
    assert Plugin().state_dict() == {}

    class More(Every):
        checkpointed = ("extra", "steps")  # a repeated name is saved once

        def __init__(self) -> None:
            super().__init__()
            self.extra = 3

    assert More.checkpointed_attributes() == (*Every.checkpointed, "extra")
    assert More().state_dict()["extra"] == 3


def test_a_missing_key_names_the_method_and_the_key():
    state = EWC(mode="online").state_dict()
    assert set(state) == {"fishers", "anchors", "generator"}
    del state["anchors"]
    with pytest.raises(MissingStateError, match=r"ewc_online \(EWC\) has no 'anchors'"):
        EWC(mode="online").load_state_dict(state)
    state = AGEM().state_dict()
    del state["buffer"]
    with pytest.raises(MissingStateError, match=r"agem \(AGEM\) has no 'buffer'"):
        AGEM().load_state_dict(state)


@pytest.mark.parametrize("method, optional", [
    (Refresh, {"step_count": 0, "optimizer_step_norms": {}}),  # before interval / scale existed
    (KFPF, {"trigger_steps": []}),  # before the trigger steps were recorded
    (SHARP, {"stable_history": []}),  # before the per-experience stable-unit history
])
def test_keys_older_checkpoints_lack_are_tolerated_only_where_declared(method, optional):
    saved = method()
    for name in optional:
        setattr(saved, name, {"a": 1.0} if isinstance(optional[name], dict) else 5 if isinstance(optional[name], int) else [[2]])
    state = saved.state_dict()
    for name in optional:
        del state[name]
    fresh = method()
    for name in optional:
        setattr(fresh, name, saved.__dict__[name])
    fresh.load_state_dict(state)
    assert {name: getattr(fresh, name) for name in optional} == optional
    assert method.checkpointed_defaults() == optional


def test_an_attribute_of_an_unsupported_kind_is_refused_by_name():
    s = Every()
    s.pair = (object(), 1)
    with pytest.raises(TypeError, match=r"every \(Every\)\.pair\[0\] holds a object"):
        s.state_dict()
