"""The annotation cache: keys, hits, validation of entries, and its use when a run builds conditions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annotators.base import Annotator
from annotators.cache import AnnotationCache
from annotators.canny import CannyAnnotator
from tests.conftest import FAST
from videoedit.conditions import ControlSpec, build_control
from videoedit.data.source import SourceVideo


class CountingCanny(CannyAnnotator):
    calls = 0

    def annotate(self, frames, indices=None):
        type(self).calls += 1
        return super().annotate(frames, indices)


def _frames(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (3, 32, 40, 3), dtype=np.uint8)


def test_second_call_is_a_hit_with_identical_maps(tmp_path):
    cache = AnnotationCache(tmp_path)
    CountingCanny.calls = 0
    annotator = CountingCanny()
    first, hit1 = cache.annotate(annotator, _frames())
    second, hit2 = cache.annotate(CountingCanny(), _frames())
    assert (hit1, hit2) == (False, True) and CountingCanny.calls == 1
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, CannyAnnotator()(_frames()))


def test_key_covers_frames_settings_indices_and_kind():
    f = _frames()
    s = CannyAnnotator().settings()
    key = AnnotationCache.key("condition/canny", f, s, [0, 1, 2])
    assert key == AnnotationCache.key("condition/canny", f.copy(), dict(s), [0, 1, 2])
    assert key != AnnotationCache.key("condition/canny", _frames(1), s, [0, 1, 2])
    assert key != AnnotationCache.key("condition/canny", f, CannyAnnotator(50, 200).settings(), [0, 1, 2])
    assert key != AnnotationCache.key("condition/canny", f, s, [0, 2, 4])
    assert key != AnnotationCache.key("masks", f, s, [0, 1, 2])


def test_corrupt_or_mismatching_entries_are_recomputed(tmp_path, caplog):
    cache = AnnotationCache(tmp_path)
    maps, _ = cache.annotate(CannyAnnotator(), _frames())
    key = AnnotationCache.key("condition/canny", _frames(), CannyAnnotator().settings())
    path = cache.path(key)
    assert path.is_file()
    assert cache.load(key, shape=(1, 2, 3)) is None and not path.exists()  # wrong shape: discarded
    cache.annotate(CannyAnnotator(), _frames())
    path.write_bytes(b"not a safetensors file")
    again, hit = cache.annotate(CannyAnnotator(), _frames())
    assert not hit and "discarding invalid annotation cache entry" in caplog.text
    np.testing.assert_array_equal(again, maps)
    cache.save(key, np.zeros((2, 2), np.uint8))
    assert cache.load("0" * 32) is None  # another key's file name: missing
    other = cache.path("f" * 32)
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_bytes(path.read_bytes())  # an entry under the wrong name fails the key check
    assert cache.load("f" * 32) is None


def test_build_control_uses_the_cache_and_data_maps_still_win(tmp_path):
    frames = torch.from_numpy(_frames()).permute(0, 3, 1, 2).float() / 127.5 - 1
    source = SourceVideo(frames=frames)
    cache = AnnotationCache(tmp_path)
    spec = ControlSpec("canny")
    maps1, origin1 = build_control(source, spec, CannyAnnotator, cache)
    maps2, origin2 = build_control(source, spec, CannyAnnotator, cache)
    assert "annotation cache miss" in origin1 and "annotation cache hit" in origin2
    np.testing.assert_array_equal(maps1, maps2)
    given = np.full((3, 32, 40, 3), 9, np.uint8)
    with_maps = SourceVideo(frames=frames, conditions={"canny": given})
    maps, origin = build_control(with_maps, spec, CannyAnnotator, cache)
    assert (maps == 9).all() and origin.startswith("precomputed")


def test_precomputed_maps_rewritten_in_place_are_read_again(tmp_path):
    from annotators.precomputed import PrecomputedCondition
    from videoedit.io.writers import write_frames

    frames = torch.from_numpy(_frames()).permute(0, 3, 1, 2).float() / 127.5 - 1
    source = SourceVideo(frames=frames)
    cache = AnnotationCache(tmp_path / "cache")
    spec = ControlSpec("depth")
    folder = tmp_path / "depth"
    write_frames(folder, np.full((3, 32, 40, 3), 10, np.uint8))
    annotator = PrecomputedCondition(str(folder), "depth")
    before = annotator.settings()
    maps, origin = build_control(source, spec, lambda: annotator, cache)
    assert (maps == 10).all() and "annotation cache" not in origin  # a read: never cached
    assert not (tmp_path / "cache").exists()
    new = np.repeat(_frames(1)[..., :1], 3, axis=-1)  # same names, new maps (other PNG sizes too)
    write_frames(folder, new)
    maps, _ = build_control(source, spec, lambda: annotator, cache)
    np.testing.assert_array_equal(maps, new)
    # the settings digest the folder listing (name, size, mtime of each file): they change too
    after = annotator.settings()
    assert after["files"] == 3 and after["digest"] != before["digest"]
    assert before["version"] == 1 and not PrecomputedCondition.cacheable and CannyAnnotator.cacheable


def test_a_run_stores_its_conditions_in_the_cache(compose, tmp_path, monkeypatch):
    """edit() passes <cache_root>/annotations to build_control (hits are tested on build_control above)."""
    from videoedit.edit import edit

    monkeypatch.setenv("VIDEOEDIT_CACHE_ROOT", str(tmp_path / "cache"))
    result = edit(compose(*FAST, "controlnet=canny", "method.num_inference_steps=2"), tmp_path / "a")
    assert "CannyAnnotator" in result.metrics["control"]
    assert "annotation cache miss" in result.metrics["control"]
    assert (tmp_path / "a" / "control" / "00000.png").is_file()
    (entry,) = (tmp_path / "cache" / "annotations").rglob("*.safetensors")
    maps = AnnotationCache(tmp_path / "cache" / "annotations").load(entry.stem)
    assert maps is not None and maps.shape == (4, 128, 128, 3)


def test_annotator_output_is_checked():
    class Broken(Annotator):
        condition_type = "x"

        def annotate(self, frames, indices=None):
            return frames[:1]

    with pytest.raises(RuntimeError, match="expected"):
        AnnotationCache("/nonexistent").annotate(Broken(), _frames())


def test_changed_bytes_with_an_intact_shape_are_recomputed(tmp_path, caplog):
    from tests.corruption import corrupt_safetensors

    cache = AnnotationCache(tmp_path)
    CountingCanny.calls = 0
    maps, _ = cache.annotate(CountingCanny(), _frames())
    (path,) = tmp_path.rglob("*.safetensors")
    corrupt_safetensors(path, "data", offset=100)
    again, hit = cache.annotate(CountingCanny(), _frames())
    assert not hit and CountingCanny.calls == 2  # discarded and rebuilt
    assert "checksum mismatch" in caplog.text
    np.testing.assert_array_equal(again, maps)
    _, hit = cache.annotate(CountingCanny(), _frames())
    assert hit and CountingCanny.calls == 2  # the rebuilt entry is valid
