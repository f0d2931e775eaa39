"""Stop a run at the step where its numbers stop being numbers, and keep JSON output valid.

:func:`check_finite` is called on latents and noise predictions inside the sampling and inversion loops:
a NaN or infinity there (half precision overflowing, a huge guidance scale, a broken input) would
otherwise flow through every later step and end as black frames in a run marked complete. It raises a
:class:`~videoedit.errors.NumericalError` naming the tensor, the phase, the step and the timestep, and what
to try. It costs one reduction and one device synchronisation per call.

:func:`json_safe` turns non-finite floats (Python, NumPy or 0-d tensors) into ``null`` and lists where they
were, so ``metrics.json`` is always valid JSON (``json.dumps`` would write a bare ``NaN``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from videoedit.errors import NumericalError

_PHASES = {"invert": "inversion", "sample": "sampling"}


def check_finite(
    x: torch.Tensor,
    name: str,
    *,
    phase: str | None = None,
    step: int | None = None,
    num_steps: int | None = None,
    timestep: int | None = None,
    state: Any = None,
) -> torch.Tensor:
    """Return ``x`` unchanged if every value is finite, else raise :class:`NumericalError`.

    Args:
        x: any tensor, e.g. latents ``(F, 4, h, w)`` or a noise prediction ``(B, 4, h, w)``.
        name: what ``x`` is, for the message (``"latents"``, ``"noise prediction"``).
        phase: ``"invert"``/``"sample"`` (or any words); ``step``/``num_steps``: 0-based index and loop
            length; ``timestep``: the diffusion timestep.
        state: a :class:`~videoedit.attention.state.StepState`; fills ``phase``, ``step``, ``num_steps`` and
            ``timestep`` when they are not given (pipelines update it before every model call).

    Raises:
        NumericalError: ``x`` holds NaN or infinite values; the message says where and what to try.
    """
    if bool(torch.isfinite(x).all()):
        return x
    if state is not None:
        phase = phase if phase is not None else getattr(state, "phase", None)
        step = step if step is not None else getattr(state, "step_index", None)
        num_steps = num_steps if num_steps is not None else getattr(state, "num_steps", None)
        timestep = timestep if timestep is not None else getattr(state, "timestep", None)
    raise NumericalError(nonfinite_message(x, name, phase, step, num_steps, timestep))


def nonfinite_message(
    x: torch.Tensor,
    name: str,
    phase: str | None = None,
    step: int | None = None,
    num_steps: int | None = None,
    timestep: int | None = None,
) -> str:
    """The :class:`NumericalError` message for ``x`` (see :func:`check_finite`)."""
    flat = x.detach()
    nan = int(torch.isnan(flat).sum())
    inf = int(torch.isinf(flat).sum())
    where = " ".join(
        part
        for part in (
            _PHASES.get(phase, phase) if phase else "",
            f"step {int(step) + 1}" + (f"/{int(num_steps)}" if num_steps else "") if step is not None else "",
        )
        if part
    )
    if timestep is not None:
        where = f"{where} (t={int(timestep)})" if where else f"t={int(timestep)}"
    at = f" at {where}" if where else ""
    dtype = str(x.dtype).replace("torch.", "")
    if x.dtype in (torch.float16, torch.bfloat16):
        advice = (
            f"{dtype} overflows first: run in full precision (dtype=fp32), or lower method.guidance_scale"
        )
    else:
        advice = (
            "lower method.guidance_scale (and the other strengths of the method), or check the inputs "
            "(a frame or a control map with extreme values)"
        )
    return (
        f"The {name} became non-finite{at}: {nan} NaN and {inf} infinite of {flat.numel()} values "
        f"({dtype}, shape {tuple(x.shape)}). The run stops here (nothing is marked complete). Try: {advice}."
    )


def json_safe(data: Any, path: str = "") -> tuple[Any, list[str]]:
    """``(copy of data with non-finite floats as None, dotted keys where they were)``.

    Handles dicts, lists/tuples, Python/NumPy floats and scalar tensors; NumPy scalars become Python ones.
    Keys are dotted (``quality.mean.warp_error``), list items indexed (``edits[0].seconds``).
    """
    found: list[str] = []

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if (isinstance(value, torch.Tensor) and value.numel() == 1) or isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            return walk(value.tolist(), where)
        if isinstance(value, float) and not math.isfinite(value):
            found.append(where or "<root>")
            return None
        return value

    return walk(data, path), found
