"""videoedit: zero-shot, text-driven video editing with pretrained image diffusion models."""

__version__ = "0.1.0"
