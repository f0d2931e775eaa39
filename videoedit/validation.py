"""Check config values against the constructor they are meant for, before anything is built.

Every instantiable config node (``method``, ``data``, ``model``, ``annotator``, nested nodes with their own
``_target_`` such as ``method.keyframe_method``) is checked against its ``_target_``'s signature and type
hints: numbers must be numbers (and finite), booleans booleans, ``Literal`` settings one of their choices,
lists lists, and nested settings (``method.modulation``, ``method.inversion``, any argument typed as a class
or dataclass and given as a mapping) against that class's own constructor. Keys that are not arguments are
reported with the closest argument name. The check is generic: it reads the code's own annotations, so a new
method or setting needs nothing here.

Each problem names the full key (``method.guidance_scale``) and the expected type; all problems of a node
are reported together in one :class:`~videoedit.errors.ConfigError`::

    method.guidance_scale=nan is not a finite number: expected a float (default 7.5)

Values whose annotation cannot be judged from a config (``Any``, callables, unresolvable names, classes such
as ``torch.dtype`` given as strings) are accepted: the constructor converts them.
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import difflib
import inspect
import math
import os
import pathlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Union

from omegaconf import DictConfig, OmegaConf

from videoedit.errors import ConfigError

#: Hydra's instantiate keys: never constructor arguments
RESERVED_KEYS = frozenset({"_target_", "_convert_", "_recursive_", "_partial_", "_args_"})
#: OmegaConf's marker of a mandatory value that was not given
MISSING = "???"

_SEQUENCES = (
    list,
    tuple,
    set,
    frozenset,
    cabc.Sequence,
    cabc.MutableSequence,
    cabc.Collection,
    cabc.Iterable,
    cabc.Set,
)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)
_PATHS = (pathlib.Path, pathlib.PurePath, os.PathLike)


# ------------------------------------------------------------------------------------------ public


def check_node(node: DictConfig | Mapping[str, Any], key: str, target: Callable | None = None) -> None:
    """Raise :class:`ConfigError` when a value of ``node`` does not fit ``target``'s constructor.

    Args:
        node: a config node (``cfg.method``) or a plain mapping of its values.
        key: the node's full key (``"method"``), used in messages (``method.guidance_scale``).
        target: the callable the node builds; default: the node's ``_target_``. A node whose target
            cannot be imported is not checked here (building it reports that).

    Raises:
        ConfigError: every problem of the node (and of its nested settings), each naming its full key
            and the expected type.
    """
    values = _plain(node)
    if values is None:
        return
    problems = _check_call(values, key, target)
    if problems:
        raise ConfigError(
            "Invalid config value" + ("s" if len(problems) > 1 else "") + ": " + "; ".join(problems) + "."
        )


#: the primary config's own settings (``configs/config.yaml``), checked like constructor arguments
ROOT_SETTINGS: dict[str, Any] = {
    "seed": int,
    "sample_seeds": list[int],
    "prompts": list[str | list[str | None]],
    "negative_prompt": str | None,
    "device": str,
    "dtype": Literal["auto", "fp32", "float32", "fp16", "float16", "bf16", "bfloat16"],
    "force": bool,
    "progress_bar": bool,
    "cache_inversion": bool,
    "cache_annotations": bool,
    "sweep_split": Literal["edits", "jobs"],
}
#: nodes without a ``_target_`` that a known class is built from
NODE_TARGETS = {"metrics": "videoedit.metrics.evaluate.Evaluator"}


def check_config(cfg: DictConfig, keys: Iterable[str] | None = None) -> None:
    """Check a whole composed config before any work: :data:`ROOT_SETTINGS`, every top-level node with a
    ``_target_`` (``method``, ``data``, ``model``, ``annotator``...) and :data:`NODE_TARGETS`.

    Args:
        cfg: the composed config.
        keys: only these top-level nodes (default: all of them).

    Raises:
        ConfigError: every problem found, each naming its full key and the expected type.
    """
    values = _plain(cfg)
    if values is None:
        return
    problems: list[str] = []
    for key, value in values.items():
        key = str(key)
        if keys is not None and key not in keys:
            continue
        if key in ROOT_SETTINGS:
            problems += _check_value(value, ROOT_SETTINGS[key], key)
        elif isinstance(value, dict) and isinstance(value.get("_target_"), str):
            problems += _check_call(value, key, None)
        elif isinstance(value, dict) and key in NODE_TARGETS:
            target = _locate(NODE_TARGETS[key])
            problems += _check_call(value, key, target) if target is not None else []
    if problems:
        raise ConfigError(
            "Invalid config value" + ("s" if len(problems) > 1 else "") + ": " + "; ".join(problems) + "."
        )


# ------------------------------------------------------------------------------------------ internals


def _plain(node: Any) -> dict[str, Any] | None:
    """The node as plain Python values, interpolations resolved, ``???`` kept as :data:`MISSING`.

    ``None`` when it cannot be resolved (a bad interpolation is reported when the node is built).
    """
    if isinstance(node, DictConfig):
        try:
            out = OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
        except Exception:
            return None
        return out if isinstance(out, dict) else None
    if isinstance(node, Mapping):
        return dict(node)
    return None


def _locate(path: str) -> Callable | None:
    try:
        from hydra.utils import get_object

        obj = get_object(path)
    except Exception:
        return None
    return obj if callable(obj) else None


def _signature(target: Callable) -> tuple[dict[str, inspect.Parameter], dict[str, Any]] | None:
    """``(parameters, type hints)`` of ``target``'s constructor (hints that cannot be resolved are left out)."""
    try:
        params = dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return None
    func = target.__init__ if isinstance(target, type) and not dataclasses.is_dataclass(target) else target
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # one unresolvable annotation: resolve them one by one
        hints = {}
        raw = getattr(func, "__annotations__", {}) or {}
        namespace = getattr(func, "__globals__", None) or vars(inspect.getmodule(target) or object())
        for name, annotation in raw.items():
            try:
                hints[name] = eval(annotation, dict(namespace)) if isinstance(annotation, str) else annotation
            except Exception:
                continue
    return params, hints


def _target_name(target: Callable) -> str:
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def _check_call(values: dict[str, Any], key: str, target: Callable | None) -> list[str]:
    """Problems of ``values`` as keyword arguments of ``target`` (or of their ``_target_``)."""
    if target is None:
        path = values.get("_target_")
        if not isinstance(path, str):
            return []
        target = _locate(path)
        if target is None:
            return []  # an unknown _target_ is reported by build() with the config group's name
    found = _signature(target)
    if found is None:
        return []
    params, hints = found
    if isinstance(target, type) and "self" in params:  # an unbound __init__ signature
        params.pop("self")
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    problems: list[str] = []
    for name, value in values.items():
        name = str(name)
        if name in RESERVED_KEYS:
            continue
        full = f"{key}.{name}"
        if name not in named:
            if not var_keyword:
                close = difflib.get_close_matches(name, list(named), n=1)
                known = f"did you mean {key}.{close[0]}?" if close else f"its settings: {', '.join(named)}"
                problems.append(f"{full} is not a setting of {_target_name(target)} ({known})")
            continue
        default = named[name].default
        problems += _check_value(value, hints.get(name, Any), full, default)
    return problems


def _check_value(value: Any, hint: Any, key: str, default: Any = inspect.Parameter.empty) -> list[str]:
    """Problems of one value against its annotation (``[]``: it fits)."""
    if isinstance(value, str) and value == MISSING:
        return [f"{key} is not set (???): give it a value, e.g. {key}=<value>"]
    if isinstance(value, dict) and isinstance(value.get("_target_"), str):
        return _check_call(value, key, None)  # a nested node builds its own target
    if value is None and default is None:  # `x: float = None` is an optional setting, whatever its hint
        return []
    return _check(value, hint, key, default)


def _check(value: Any, hint: Any, key: str, default: Any) -> list[str]:
    if hint is Any or hint is inspect.Parameter.empty or hint is object or isinstance(hint, str):
        return []
    if isinstance(hint, typing.TypeVar | typing.ForwardRef):
        return []
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return _check(value, args[0], key, default)
    if origin is Union or origin is types.UnionType:
        return _check_union(value, args, hint, key, default)
    if value is None:
        return [] if hint is type(None) else [f"{key} is null: expected {_describe(hint)}"]
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return []
        return [f"{key}={value!r} is not one of {', '.join(repr(a) for a in args)}"]
    if hint is bool:
        return [] if isinstance(value, bool) else [_mismatch(value, hint, key, default)]
    if hint is int:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer()
        )
        return [] if ok else [_mismatch(value, hint, key, default)]
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [_mismatch(value, hint, key, default)]
        if not math.isfinite(value) and not (isinstance(default, float) and not math.isfinite(default)):
            return [
                f"{key}={value} is not a finite number: expected {_describe(hint)}{_default_text(default)}"
            ]
        return []
    if hint is str:
        return [] if isinstance(value, str) else [_mismatch(value, hint, key, default)]
    if hint in _PATHS or (isinstance(hint, type) and issubclass(hint, pathlib.PurePath)):
        return [] if isinstance(value, str | os.PathLike) else [_mismatch(value, hint, key, default)]
    container = origin or hint
    if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if not isinstance(value, list | tuple):
            return [_mismatch(value, hint, key, default)]
        if len(value) != len(args):
            return [f"{key}={value!r} has {len(value)} items: expected {_describe(hint)}"]
        return [p for i, (v, a) in enumerate(zip(value, args)) for p in _check(v, a, f"{key}[{i}]", _EMPTY)]
    if container in _SEQUENCES:
        if not isinstance(value, list | tuple | set | frozenset):
            return [_mismatch(value, hint, key, default)]
        item = args[0] if args else Any
        return [p for i, v in enumerate(value) for p in _check(v, item, f"{key}[{i}]", _EMPTY)]
    if container in _MAPPINGS:
        if not isinstance(value, dict):
            return [_mismatch(value, hint, key, default)]
        item = args[1] if len(args) == 2 else Any
        return [p for k, v in value.items() for p in _check_value(v, item, f"{key}.{k}", _EMPTY)]
    if isinstance(hint, type):
        if isinstance(value, dict) and _is_settings_class(hint):
            return _check_call(value, key, hint)  # nested settings: the class's own constructor
        if hint in (int, float, bool, str, list, tuple, dict) or isinstance(value, hint):
            return []
        return []  # a class built from a plain value by the constructor (torch.dtype from "fp16" ...)
    return []


def _check_union(value: Any, alternatives: tuple, hint: Any, key: str, default: Any) -> list[str]:
    if value is None:
        return [] if type(None) in alternatives else [f"{key} is null: expected {_describe(hint)}"]
    options = [a for a in alternatives if a is not type(None)]
    if isinstance(value, dict):  # a mapping for a union with a settings class is that class's arguments
        classes = [a for a in options if isinstance(a, type) and _is_settings_class(a)]
        if classes:
            return _check_call(value, key, classes[0])
    results = [_check(value, a, key, default) for a in options]
    if any(not r for r in results):
        return []
    structural = [r for a, r in zip(options, results, strict=True) if _same_shape(value, a)]
    if len(structural) == 1:
        return structural[0]
    if isinstance(value, float) and not math.isfinite(value) and any(a is float for a in options):
        return [f"{key}={value} is not a finite number: expected {_describe(hint)}{_default_text(default)}"]
    return [_mismatch(value, hint, key, default)]


def _same_shape(value: Any, hint: Any) -> bool:
    """Whether ``hint`` is the container kind ``value`` is (its problems are then the informative ones)."""
    container = typing.get_origin(hint) or hint
    if isinstance(value, list | tuple):
        return container in _SEQUENCES or container is tuple
    if isinstance(value, dict):
        return container in _MAPPINGS
    return False


def _is_settings_class(cls: type) -> bool:
    """A class configured by a mapping of its constructor arguments (dataclasses, our own classes)."""
    if cls in (int, float, bool, str, list, tuple, dict, set, frozenset, type(None)):
        return False
    if dataclasses.is_dataclass(cls):
        return True
    module = getattr(cls, "__module__", "") or ""
    return module.split(".")[0] in ("videoedit", "annotators")


class _Empty:
    pass


_EMPTY = _Empty()


def _default_text(default: Any) -> str:
    if default is inspect.Parameter.empty or isinstance(default, _Empty):
        return ""
    if dataclasses.is_dataclass(default) or isinstance(default, Mapping) or default is None:
        return ""
    shown = list(default) if isinstance(default, tuple) else default
    return f" (default {shown!r})" if not isinstance(shown, str) else f" (default {shown})"


_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a float",
    str: "a string",
    type(None): "null",
}


def _describe(hint: Any) -> str:
    """``hint`` in words: ``a float``, ``an integer or null``, ``a list of integers``..."""
    if hint in _TYPE_NAMES:
        return _TYPE_NAMES[hint]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        return " or ".join(dict.fromkeys(_describe(a) for a in args))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is typing.Annotated:
        return _describe(args[0])
    container = origin or hint
    if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    if container in _SEQUENCES or container is tuple:
        return f"a list of {_plural(args[0])}" if args else "a list"
    if container in _MAPPINGS:
        return f"a mapping of {_plural(args[1])}" if len(args) == 2 else "a mapping"
    if isinstance(hint, type) and (hint in _PATHS or issubclass(hint, pathlib.PurePath)):
        return "a path"
    if isinstance(hint, type):
        return f"a {hint.__name__} (or a mapping of its settings)"
    return str(hint)


def _plural(hint: Any) -> str:
    words = {bool: "booleans", int: "integers", float: "floats", str: "strings"}
    return words.get(hint, _describe(hint))


def _mismatch(value: Any, hint: Any, key: str, default: Any) -> str:
    shown = f"{value!r}" if isinstance(value, str) else f"{value}"
    what = "is not a number" if _wants_number(hint) and isinstance(value, str) else f"is {_kind(value)}"
    return f"{key}={shown} {what}: expected {_describe(hint)}{_default_text(default)}"


def _kind(value: Any) -> str:
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"))
    for cls, word in kinds:
        if isinstance(value, cls):
            return word
    if isinstance(value, list | tuple | set | frozenset):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _wants_number(hint: Any) -> bool:
    if hint in (int, float):
        return True
    origin = typing.get_origin(hint)
    return (origin is Union or origin is types.UnionType) and any(
        a in (int, float) for a in typing.get_args(hint)
    )
