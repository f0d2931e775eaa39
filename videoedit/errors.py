"""Exceptions raised for bad input, before any expensive work.

Every message says what is wrong *and* what to do about it. Tests assert on these messages, so keep
them specific.
"""

from __future__ import annotations


class VideoEditError(Exception):
    """Base class of every error videoedit raises on purpose."""


class InputError(VideoEditError, ValueError):
    """Bad user input: a path, a prompt, a config value."""


class VideoReadError(InputError):
    """A video (file or frame folder) is missing or cannot be decoded."""


class NotEnoughFramesError(InputError):
    """The sampling (start, count, stride) asks for frames the video does not have."""


class MaskError(InputError):
    """Region masks are missing, of the wrong size, or do not match the frames."""


class PromptError(InputError):
    """Prompts do not match the regions, or a local prompt is not part of its full prompt."""


class ConfigError(InputError):
    """A config value is unknown or inconsistent with another one."""


class ResolutionError(InputError):
    """The frame size cannot go through the UNet (not a multiple of its downsampling factor)."""


class ModelLoadError(VideoEditError, OSError):
    """Model weights could not be found or loaded."""


class CacheError(VideoEditError):
    """An on-disk cache entry is corrupt or does not match its key."""


class NumericalError(VideoEditError, FloatingPointError):
    """A tensor of the run (latents, noise prediction, decoded frames) became NaN or infinite.

    Raised at the step where it happens (``videoedit.numerics.check_finite``), so that a diverged run stops
    there instead of finishing with black frames and a ``COMPLETE`` marker.
    """
