"""On-disk cache of inversions, keyed by everything that determines them.

A sweep over editing settings (guidance, modulation strength, seeds...) inverts once: the key covers
the frames, the model weights, the control maps, the source prompt, the schedules, the inversion
guidance, the attention used during inversion and the dtype, and nothing that only affects editing.

Entries are safetensors files written atomically (temporary file + rename) with their key, layout and
the SHA-256 of every tensor's content in the metadata. On load they are validated (key, format,
timesteps, shapes, checksums, finite values); a corrupt or mismatching entry (e.g. bytes changed on disk
with the shapes intact) is discarded with a warning and recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from videoedit.inversion.ddim import InversionOutput
from videoedit.io.atomic import atomic_path

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


def tensor_digest(x: torch.Tensor | None) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (``"none"`` for ``None``)."""
    if x is None:
        return "none"
    x = x.detach().contiguous().cpu()
    digest = hashlib.sha256(f"{x.dtype}:{tuple(x.shape)}:".encode())
    digest.update(x.view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    return digest.hexdigest()


def cache_key(parts: Mapping[str, Any]) -> str:
    """A stable key from a mapping of JSON-able values (tensors must be digested first)."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class InversionCache:
    """Inversions stored under ``<root>/<key[:2]>/<key>.safetensors``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def load(
        self, key: str, expected_timesteps: list[int], latent_shape: tuple[int, ...]
    ) -> InversionOutput | None:
        """The cached inversion for ``key``, or ``None`` (missing, or invalid and then removed).

        Args:
            expected_timesteps: timesteps whose latents the entry must hold.
            latent_shape: ``(F, 4, h, w)`` of every latent.
        """
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("videoedit", "{}"))
            output = self._validate(key, tensors, meta, expected_timesteps, latent_shape)
        except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as err:
            logger.warning("discarding invalid inversion cache entry %s: %s", path, err)
            path.unlink(missing_ok=True)
            return None
        output.cache_hit = True
        output.key = key
        return output

    @staticmethod
    def _validate(
        key: str,
        tensors: dict[str, torch.Tensor],
        meta: dict,
        expected_timesteps: list[int],
        latent_shape: tuple[int, ...],
    ) -> InversionOutput:
        if meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
            raise ValueError(
                f"metadata key/format {meta.get('key')}/{meta.get('format')} do not match {key}/{CACHE_FORMAT}"
            )
        checksums = meta.get("checksums")
        if not isinstance(checksums, dict):
            raise ValueError("no content checksums (written by an older version)")
        if set(checksums) != set(tensors):
            raise ValueError(f"tensors {sorted(tensors)[:4]}... do not match the recorded ones")
        for name, tensor in tensors.items():
            if tensor_digest(tensor) != checksums[name]:
                raise ValueError(f"checksum mismatch in {name!r}: its content changed on disk")
        latents = {}
        for t in expected_timesteps:
            x = tensors[f"latents.{t}"]
            if tuple(x.shape) != tuple(latent_shape):
                raise ValueError(
                    f"latents at t={t} have shape {tuple(x.shape)}, expected {tuple(latent_shape)}"
                )
            if not torch.isfinite(x).all():
                raise ValueError(f"latents at t={t} are not finite")
            latents[t] = x
        source = tensors["source_latents"]
        if tuple(source.shape) != tuple(latent_shape):
            raise ValueError(
                f"source latents have shape {tuple(source.shape)}, expected {tuple(latent_shape)}"
            )
        extras = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
        missing = set(meta.get("extras", [])) - set(extras)
        if missing:
            raise ValueError(f"missing extras {sorted(missing)}")
        return InversionOutput(latents=latents, source_latents=source, extras=extras)

    def save(self, key: str, output: InversionOutput, info: Mapping[str, Any] | None = None) -> Path:
        """Write ``output`` under ``key`` atomically."""
        tensors = {f"latents.{t}": x.detach().contiguous().cpu() for t, x in output.latents.items()}
        tensors["source_latents"] = output.source_latents.detach().contiguous().cpu()
        tensors.update({f"extra.{k}": v.detach().contiguous().cpu() for k, v in output.extras.items()})
        meta = {
            "key": key,
            "format": CACHE_FORMAT,
            "checksums": {name: tensor_digest(x) for name, x in tensors.items()},
            "timesteps": sorted(output.latents),
            "extras": sorted(output.extras),
            "info": dict(info or {}),
        }
        path = self.path(key)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"videoedit": json.dumps(meta, default=str)})
        return path
