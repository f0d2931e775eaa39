import torch

from videoedit.inversion.cache import InversionCache, cache_key, tensor_digest
from videoedit.inversion.ddim import InversionOutput


def _output():
    g = torch.Generator().manual_seed(0)
    return InversionOutput(
        latents={1: torch.randn(2, 4, 4, 4, generator=g), 21: torch.randn(2, 4, 4, 4, generator=g)},
        source_latents=torch.randn(2, 4, 4, 4, generator=g),
        extras={"feat": torch.randn(3, generator=g)},
    )


def test_keys_follow_the_content():
    x = torch.zeros(2, 3)
    assert tensor_digest(x) == tensor_digest(x.clone())
    assert tensor_digest(x) != tensor_digest(x.to(torch.float64))
    y = x.clone()
    y[0, 0] = 1e-6
    assert tensor_digest(x) != tensor_digest(y)
    assert cache_key({"a": 1, "b": "x"}) == cache_key({"b": "x", "a": 1})
    assert cache_key({"prompt": "a"}) != cache_key({"prompt": "b"})


def test_hit_miss_and_round_trip(tmp_path):
    cache = InversionCache(tmp_path)
    assert cache.load("k" * 32, [1, 21], (2, 4, 4, 4)) is None
    out = _output()
    path = cache.save("k" * 32, out)
    assert path.is_file() and not list(path.parent.glob(".*tmp*"))
    back = cache.load("k" * 32, [1, 21], (2, 4, 4, 4))
    assert back.cache_hit and back.key == "k" * 32
    for t in (1, 21):
        torch.testing.assert_close(back.at(t), out.at(t))
    torch.testing.assert_close(back.extras["feat"], out.extras["feat"])


def test_invalid_entries_are_discarded(tmp_path):
    cache = InversionCache(tmp_path)
    out = _output()
    cache.save("a" * 32, out)
    # wrong shape expected -> discarded
    assert cache.load("a" * 32, [1, 21], (2, 4, 8, 8)) is None
    assert not cache.path("a" * 32).exists()
    # a missing timestep -> discarded
    cache.save("b" * 32, out)
    assert cache.load("b" * 32, [1, 21, 41], (2, 4, 4, 4)) is None
    # truncated file -> discarded
    path = cache.save("c" * 32, out)
    path.write_bytes(path.read_bytes()[:100])
    assert cache.load("c" * 32, [1, 21], (2, 4, 4, 4)) is None
    # a file saved under another key (renamed) -> discarded
    path = cache.save("d" * 32, out)
    path.rename(cache.path("e" * 32).parent.mkdir(parents=True, exist_ok=True) or cache.path("e" * 32))
    assert cache.load("e" * 32, [1, 21], (2, 4, 4, 4)) is None
    # non-finite latents -> discarded
    bad = _output()
    bad.latents[21][0, 0, 0, 0] = float("nan")
    cache.save("f" * 32, bad)
    assert cache.load("f" * 32, [1, 21], (2, 4, 4, 4)) is None


def test_changed_tensor_bytes_with_intact_shapes_are_detected(tmp_path, caplog):
    from tests.corruption import corrupt_safetensors

    cache = InversionCache(tmp_path)
    for name in ("latents.21", "source_latents", "extra.feat"):
        path = cache.save("a" * 32, _output())
        assert corrupt_safetensors(path, name, offset=5) == name
        caplog.clear()
        assert cache.load("a" * 32, [1, 21], (2, 4, 4, 4)) is None  # still loadable, shapes intact
        assert f"checksum mismatch in '{name}'" in caplog.text and "discarding" in caplog.text
        assert not path.exists()  # discarded: the next run recomputes and stores it again
    # the checksum covers the content only: an identical save loads
    cache.save("a" * 32, _output())
    assert cache.load("a" * 32, [1, 21], (2, 4, 4, 4)) is not None


def test_entries_without_checksums_are_rebuilt(tmp_path, caplog):
    import json

    from safetensors.torch import save_file

    cache = InversionCache(tmp_path)
    out = _output()
    tensors = {f"latents.{t}": x for t, x in out.latents.items()} | {"source_latents": out.source_latents}
    meta = {"key": "a" * 32, "format": 1, "timesteps": [1, 21], "extras": []}  # an older version's entry
    cache.path("a" * 32).parent.mkdir(parents=True)
    save_file(tensors, str(cache.path("a" * 32)), metadata={"videoedit": json.dumps(meta)})
    assert cache.load("a" * 32, [1, 21], (2, 4, 4, 4)) is None
    assert "no content checksums" in caplog.text
