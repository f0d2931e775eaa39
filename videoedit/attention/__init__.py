"""Attention processors (one module per method), the shared per-step state, and install helpers."""

from videoedit.attention.base import (
    AttentionCall,
    AttentionProcessorBase,
    frames_to_sequence,
    sequence_to_frames,
)
from videoedit.attention.install import attention_layer_names, attention_processors, module_hooks
from videoedit.attention.state import StepState

__all__ = [
    "AttentionCall",
    "AttentionProcessorBase",
    "StepState",
    "attention_layer_names",
    "attention_processors",
    "frames_to_sequence",
    "module_hooks",
    "sequence_to_frames",
]
