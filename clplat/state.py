"""Checkpointed state declared once: a class names the attributes it saves, the base saves them.

A method lists its checkpointed attributes in a class-level tuple, ``checkpointed = ("fishers",
"anchors", "generator")``; the tuples of its bases are added to it (``RehearsalStrategy``
declares ``buffer`` once for every rehearsal method), and ``state_dict`` / ``load_state_dict``
handle each attribute by what it holds:

- a ``torch.Generator``: its ``get_state()`` (a uint8 tensor), restored with ``set_state``;
- an object with its own ``state_dict`` / ``load_state_dict`` (``ReplayBuffer``, ``RecencyClock``,
  a helper that is itself :class:`Stateful`): that state, loaded into the object in place;
- ``None``, ``bool``, ``int``, ``float``, ``str``, tensors and dicts, lists and tuples of these:
  the value, with containers and tensors copied (tensors detached, on the CPU) so that a later
  in-place change neither alters a saved state nor a loaded one. An ``int``/``float``/``str``/
  ``bool`` attribute is restored as that type.

The key of each attribute in the saved dict is its name. Only declared attributes are saved.
A key missing from a checkpoint is an error naming the method and the key, unless the class
gives a value for older checkpoints in ``checkpoint_defaults`` (``{"step_count": 0}``).
A method whose saved form genuinely differs from an attribute (a ``SequenceData`` saved as a
tuple of tensors, a value derived from a module) declares the rest and extends
``state_dict`` / ``load_state_dict`` with ``super()`` for that one key. Work to redo after a
load (derived caches) goes in :meth:`Stateful.after_load_state`.

Everything saved is a tensor or a plain container, so checkpoints load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

_SCALARS = (type(None), bool, int, float, str)


class MissingStateError(ValueError):
    """A checkpoint lacks a key that a method declares (a checkpoint of another version or method)."""


def is_stateful(obj: Any) -> bool:
    """Whether ``obj`` saves itself (``state_dict`` and ``load_state_dict``)."""
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def copy_value(value: Any, where: str) -> Any:
    """A copy of a plain value (tensors detached and on the CPU; containers rebuilt); anything
    else is refused with a ``TypeError`` naming ``where``."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict):
        return {k: copy_value(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list):
        return [copy_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(copy_value(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where} holds a {type(value).__name__}, which is not saved generically (tensors, "
                    "numbers, strings, None and dicts, lists, tuples of them; a torch.Generator; an object "
                    "with state_dict/load_state_dict): save it in a state_dict override")


def save_attribute(value: Any, where: str) -> Any:
    """The saved form of one declared attribute's ``value``."""
    if isinstance(value, torch.Generator):
        return value.get_state()
    if is_stateful(value):
        return value.state_dict()
    return copy_value(value, where)


def load_attribute(current: Any, saved: Any, where: str) -> Any:
    """The value an attribute holding ``current`` takes from its saved form (a generator or
    stateful object is loaded in place and returned)."""
    if isinstance(current, torch.Generator):
        current.set_state(saved)
        return current
    if is_stateful(current):
        current.load_state_dict(saved)
        return current
    value = copy_value(saved, where)
    if value is None:
        return None
    for kind in (bool, int, float, str):  # bool first: a bool is an int
        if isinstance(current, kind):
            return kind(value)
    return value


class Stateful:
    """An object whose checkpointed state is its declared attributes (see the module docstring)."""

    #: the attributes saved in checkpoints, under their own names (the bases' are added)
    checkpointed: ClassVar[tuple[str, ...]] = ()
    #: values for declared attributes that older checkpoints lack (the bases' are added)
    checkpoint_defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def checkpointed_attributes(cls) -> tuple[str, ...]:
        """Every declared attribute, the bases' first, each once."""
        names: dict[str, None] = {}
        for klass in reversed(cls.__mro__):
            names.update(dict.fromkeys(vars(klass).get("checkpointed", ())))
        return tuple(names)

    @classmethod
    def checkpointed_defaults(cls) -> dict[str, Any]:
        defaults: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            defaults.update(vars(klass).get("checkpoint_defaults", {}))
        return defaults

    def _state_owner(self) -> str:
        name = getattr(self, "name", None)
        return f"{name} ({type(self).__name__})" if isinstance(name, str) else type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        return {name: save_attribute(getattr(self, name), f"{self._state_owner()}.{name}")
                for name in self.checkpointed_attributes()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        defaults = self.checkpointed_defaults()
        for name in self.checkpointed_attributes():
            if name in state:
                saved = state[name]
            elif name in defaults:
                saved = defaults[name]
            else:
                raise MissingStateError(f"the checkpoint's state for {self._state_owner()} has no {name!r} "
                                        f"(it has {sorted(map(str, state))}): it was written by another "
                                        "method or version")
            where = f"{self._state_owner()}.{name}"
            setattr(self, name, load_attribute(getattr(self, name), saved, where))
        self.after_load_state()

    def after_load_state(self) -> None:
        """Called at the end of ``load_state_dict`` (rebuild what derives from the loaded state)."""


__all__ = ["Stateful", "MissingStateError", "copy_value", "save_attribute", "load_attribute", "is_stateful"]
