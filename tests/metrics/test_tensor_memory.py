"""The exact tensor-memory counter used by memory tests and benchmarks."""

import torch

from videoedit.metrics.tensor_memory import LiveTensorBytes


def test_counts_new_storages_until_they_are_freed():
    x = torch.zeros(1000)  # before the context: never counted
    with LiveTensorBytes() as mem:
        a = x * 2  # 4000 bytes
        b = torch.empty(500, dtype=torch.float64)  # 4000 bytes
        assert mem.current == 8000
        del b
        assert mem.current == 4000
        view = a[:10]  # a view keeps the storage alive
        del a
        assert mem.current == 4000
        x.add_(1)  # in place on an input: nothing new
        y = x[:5]  # a view of an input: nothing new
        assert mem.current == 4000
        del view
    assert mem.current == 0 and mem.peak == 8000 and mem.allocations == 2
    assert y.shape == (5,)


def test_peak_sees_temporaries_inside_an_expression():
    x = torch.ones(256, 256)
    with LiveTensorBytes() as mem:
        s = ((x @ x) * 2).sum()  # the product and the scaled product are alive together
    assert mem.peak >= 2 * 256 * 256 * 4
    assert mem.current == s.numel() * 4
