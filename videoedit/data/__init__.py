"""Source clips: real videos with masks (``VideoClip``) and the generated two-figure clip."""

from videoedit.data.source import SourceVideo, VideoClip
from videoedit.data.synthetic import TwoFiguresClip, render_two_figures

__all__ = ["SourceVideo", "TwoFiguresClip", "VideoClip", "render_two_figures"]
