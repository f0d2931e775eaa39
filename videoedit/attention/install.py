"""Installing attention processors and module hooks for the duration of a call, always restoring.

Methods change the UNet only through these two context managers: processors through diffusers'
``set_attn_processor`` and feature hooks through ``register_forward_hook``. Neither replaces a
``forward``; on exit (normal or exception) the original processors are back and every hook is removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import torch
from diffusers.models.attention_processor import AttentionProcessor

ProcessorFactory = Callable[[str], AttentionProcessor | None]


def attention_layer_names(unet: torch.nn.Module, kind: str | None = None) -> list[str]:
    """Names of the UNet's attention layers (``down_blocks.1.attentions.0.transformer_blocks.0.attn1``).

    Args:
        kind: ``"attn1"`` (self-attention), ``"attn2"`` (cross-attention) or ``None`` for both.
    """
    names = [n[: -len(".processor")] for n in unet.attn_processors]
    return [n for n in names if kind is None or n.endswith(f".{kind}")]


@contextlib.contextmanager
def attention_processors(
    unet: torch.nn.Module, processors: Mapping[str, AttentionProcessor] | ProcessorFactory
) -> Iterator[dict[str, AttentionProcessor]]:
    """Install processors on some attention layers; restore the previous ones on exit.

    Args:
        unet: a diffusers model with ``attn_processors`` / ``set_attn_processor``.
        processors: ``{layer name: processor}`` (layer names as from :func:`attention_layer_names`,
            with or without the ``.processor`` suffix), or a function ``layer name -> processor or
            None`` (``None`` keeps the current processor).

    Yields:
        the full ``{"<layer>.processor": processor}`` dict now installed.
    """
    original = dict(unet.attn_processors)
    if callable(processors) and not isinstance(processors, Mapping):
        chosen = {name: processors(name[: -len(".processor")]) for name in original}
    else:
        chosen = {(k if k.endswith(".processor") else f"{k}.processor"): v for k, v in processors.items()}
        unknown = sorted(set(chosen) - set(original))
        if unknown:
            raise KeyError(f"no attention layer named {unknown[0]!r} (e.g. {next(iter(original))!r})")
    installed = {name: (chosen.get(name) or proc) for name, proc in original.items()}
    unet.set_attn_processor(dict(installed))  # diffusers pops from the dict it is given: pass a copy
    try:
        yield installed
    finally:
        unet.set_attn_processor(dict(original))


@contextlib.contextmanager
def module_hooks(
    model: torch.nn.Module,
    forward_hooks: Mapping[str, Callable] | None = None,
    pre_hooks: Mapping[str, Callable] | None = None,
) -> Iterator[None]:
    """Register forward (``hook(module, args, output)``) and pre-forward hooks by module name; remove on exit."""
    modules = dict(model.named_modules())
    handles = []
    try:
        for hooks, register in (
            (forward_hooks, "register_forward_hook"),
            (pre_hooks, "register_forward_pre_hook"),
        ):
            for name, hook in (hooks or {}).items():
                if name not in modules:
                    raise KeyError(f"no module named {name!r} in {type(model).__name__}")
                handles.append(getattr(modules[name], register)(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
