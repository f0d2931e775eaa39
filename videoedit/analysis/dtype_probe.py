"""Record the dtypes and the finiteness of tensors where they cross boundaries of a run.

:class:`DtypeProbe` watches, while it is active,

* every call of modules of the given class names (a global ``nn.Module`` forward hook, removed on exit):
  the dtype of the first floating tensor argument and of every floating tensor output, and whether
  the outputs are finite;
* calls of functions given as ``"package.module:attribute"`` or ``"package.module:Class.method"`` (the
  attribute is wrapped for the duration and restored): the same for their first floating tensor argument
  and their outputs. Wrap a function where it is looked up (the module that calls it), not only where it
  is defined.

Used by the dtype matrix (``tests/test_dtype_matrix.py``) and the GPU check (``benchmarks/gpu_check.py``).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


def floating_tensors(value: Any) -> Iterator[torch.Tensor]:
    """The floating-point tensors in ``value`` (tensors, tuples, lists, dicts and ``ModelOutput``s)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from floating_tensors(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from floating_tensors(v)


@dataclass
class BoundaryRecord:
    """What crossed one boundary.

    Attributes:
        calls: how often it was called.
        inputs: dtypes of the first floating tensor argument.
        outputs: dtypes of the floating tensor outputs.
        nonfinite: calls whose outputs held a NaN or an infinity.
    """

    calls: int = 0
    inputs: set[torch.dtype] = field(default_factory=set)
    outputs: set[torch.dtype] = field(default_factory=set)
    nonfinite: int = 0

    def add(self, args: Sequence[Any], kwargs: Mapping[str, Any], output: Any) -> None:
        self.calls += 1
        first = next(floating_tensors([*args, *kwargs.values()]), None)
        if first is not None:
            self.inputs.add(first.dtype)
        outs = list(floating_tensors(output))
        self.outputs.update(t.dtype for t in outs)
        if any(not bool(torch.isfinite(t).all()) for t in outs):
            self.nonfinite += 1


def _resolve(target: str) -> tuple[Any, str]:
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"function targets are 'package.module:attribute', got {target!r}")
    owner: Any = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    if not hasattr(owner, name):
        raise AttributeError(f"{target}: {owner!r} has no attribute {name!r}")
    return owner, name


class DtypeProbe:
    """Watch module classes and functions (see the module docstring).

    Args:
        modules: class names of modules to watch (e.g. ``UNet2DConditionModel``, ``Decoder``).
        functions: function targets to wrap, ``"package.module:attribute"``.

    Attributes:
        records: ``{class name or target: BoundaryRecord}`` for everything called at least once.
    """

    def __init__(self, modules: Sequence[str] = (), functions: Sequence[str] = ()) -> None:
        self.modules = set(modules)
        self.functions = list(functions)
        self.records: dict[str, BoundaryRecord] = {}
        self._handle = None
        self._restore: list[tuple[Any, str, Any]] = []

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        name = type(module).__name__
        if name in self.modules:
            self.records.setdefault(name, BoundaryRecord()).add(args, kwargs, output)

    def _wrap(self, target: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            self.records.setdefault(target, BoundaryRecord()).add(args, kwargs, out)
            return out

        return wrapper

    def __enter__(self) -> DtypeProbe:
        for target in self.functions:
            owner, name = _resolve(target)
            original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
            fn = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
            wrapped = self._wrap(target, fn)
            if isinstance(original, staticmethod):
                wrapped = staticmethod(wrapped)
            elif isinstance(original, classmethod):
                wrapped = classmethod(wrapped)
            setattr(owner, name, wrapped)
            self._restore.append((owner, name, original))
        if self.modules:
            self._handle = torch.nn.modules.module.register_module_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        while self._restore:
            owner, name, original = self._restore.pop()
            setattr(owner, name, original)

    def nonfinite(self) -> dict[str, int]:
        """``{boundary: calls with non-finite outputs}`` for every boundary that had any."""
        return {k: r.nonfinite for k, r in self.records.items() if r.nonfinite}
