"""Exact accounting of the tensor memory a piece of code allocates (any device, no CUDA needed).

:class:`LiveTensorBytes` is a ``TorchDispatchMode``: every aten op's output storage that does not belong
to one of the op's inputs is a new allocation; it counts as live until the last tensor seen using it is
garbage-collected. ``peak`` is the largest total of live new bytes at any moment inside the context.
Storages that existed before the context (the inputs of the measured call) are never counted, views and
in-place results of counted storages keep them alive. Python's ``tracemalloc`` cannot do this: torch
allocates tensor memory outside Python's allocator, and on the CPU there is no allocator statistic.

Used by tests (memory bounds asserted exactly, never timed) and benchmarks.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _storage_key(t: torch.Tensor) -> tuple[str, int] | None:
    try:
        storage = t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse or other storage-less tensors
        return None
    ptr = storage.data_ptr()
    return None if ptr == 0 else (str(t.device), ptr)


class LiveTensorBytes(TorchDispatchMode):
    """Live and peak bytes of the tensor storages allocated inside the context.

    Attributes:
        current: bytes of counted storages still alive.
        peak: the maximum of ``current`` inside the context.
        allocations: number of counted storages.

    Example::

        with LiveTensorBytes() as mem:
            out = f(x)
        mem.peak  # bytes, including ``out`` if it is still alive
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self.allocations = 0
        self._live: dict[tuple[str, int], list[int]] = {}  # key -> [nbytes, live tensor count]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {
            key
            for a in tree_leaves((args, kwargs or {}))
            if isinstance(a, torch.Tensor) and (key := _storage_key(a)) is not None
        }
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t, inputs)
        return out

    def _track(self, t: torch.Tensor, inputs: set[tuple[str, int]]) -> None:
        key = _storage_key(t)
        if key is None:
            return
        entry = self._live.get(key)
        if entry is None:
            if key in inputs:  # a view or in-place result of a storage from before the context
                return
            entry = self._live[key] = [t.untyped_storage().nbytes(), 0]
            self.allocations += 1
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: tuple[str, int]) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[key]
