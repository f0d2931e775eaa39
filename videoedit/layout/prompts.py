"""Local prompts inside a full prompt: token spans and the span-wise embedding swap (VideoGrain, DenseDiffusion).

VideoGrain edits with one 77-token prompt ``[full, local_1, ..., local_n]``: local prompt ``i`` describes
region ``i`` and must occur, as a token sequence, inside the full prompt. The tokens of that span are
"owned" by region ``i`` in cross-attention, and their contextual embeddings in the full prompt are
replaced by the embeddings of the local prompt encoded on its own (the DenseDiffusion trick).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from videoedit.errors import PromptError

logger = logging.getLogger(__name__)


def content_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (CLIP's start/end, T5's ``</s>``), untruncated."""
    return list(tokenizer(text, add_special_tokens=False, padding=False, truncation=False).input_ids)


def content_offset(tokenizer) -> int:
    """Where a text's own tokens start when it is encoded with special tokens: 1 for CLIP (after its
    start token), 0 for T5/UMT5 (no start token)."""
    probe = content_ids(tokenizer, "a")
    ids = list(tokenizer("a").input_ids)
    start = find_token_span(ids, probe, len(ids))
    return 0 if start is None else start


def find_token_span(full_ids: Sequence[int], local_ids: Sequence[int], limit: int = 77) -> int | None:
    """Start of the first occurrence of ``local_ids`` in ``full_ids[:limit]``, or ``None``.

    The official code scans j = 0..76 for the first ``ids_full[j:j+len] == local``; an empty local prompt
    matches nothing here (officially it "matches" at 0 and does nothing).
    """
    n = len(local_ids)
    if n == 0:
        return None
    full = list(full_ids[:limit])
    for j in range(len(full) - n + 1):
        if full[j : j + n] == list(local_ids):
            return j
    return None


@dataclass
class PromptLayout:
    """Where each local prompt sits in the full prompt.

    Attributes:
        spans: per local prompt, ``(start, end)`` token indices in the full prompt's ``L`` tokens (77 for
            CLIP, where SOT = 0), or ``None`` (empty local prompt, or not found with ``skip_missing=True``).
        token_region: ``(L,)`` long: the region index owning each token, ``-1`` for none.
    """

    spans: list[tuple[int, int] | None]
    token_region: torch.Tensor

    @property
    def owned(self) -> torch.Tensor:
        """``(L,)`` bool: tokens owned by some region."""
        return self.token_region >= 0


def locate_local_prompts(
    tokenizer,
    full_prompt: str,
    local_prompts: Sequence[str],
    skip_missing: bool = False,
    max_length: int = 77,
) -> PromptLayout:
    """Token spans of ``local_prompts`` inside ``full_prompt``.

    Args:
        skip_missing: official behaviour (silently ignore a local prompt that is not a token
            subsequence of the full prompt); by default such a prompt raises.

    Raises:
        PromptError: a non-empty local prompt is not found (the message names it).
    """
    full_ids = tokenizer(full_prompt, padding="max_length", max_length=max_length, truncation=True).input_ids
    spans: list[tuple[int, int] | None] = []
    token_region = torch.full((max_length,), -1, dtype=torch.long)
    for i, local in enumerate(local_prompts):
        local = (local or "").strip()
        ids = content_ids(tokenizer, local) if local else []
        if not ids:
            spans.append(None)  # region for self-attention grouping / blending only
            continue
        start = find_token_span(full_ids, ids, max_length)
        if start is None:
            if skip_missing:
                logger.warning(
                    "local prompt %r is not part of the full prompt %r: skipped (official behaviour)",
                    local,
                    full_prompt,
                )
                spans.append(None)
                continue
            raise PromptError(
                f"Local prompt {i + 1} {local!r} is not part of the full prompt {full_prompt!r} (its tokens must appear "
                "there verbatim, e.g. 'Spiderman' in 'Spiderman and Polar Bear ...'). Fix the prompt, or set "
                "method.skip_missing_local_prompts=true to ignore it as the official code does."
            )
        spans.append((start, start + len(ids)))
        token_region[start : start + len(ids)] = i
    return PromptLayout(spans=spans, token_region=token_region)


def swap_span_embeddings(
    full_embedding: torch.Tensor,
    local_embeddings: torch.Tensor,
    spans: Sequence[tuple[int, int] | None],
    offset: int = 1,
) -> torch.Tensor:
    """Replace each span of ``full_embedding (1, L, D)`` by the tokens of its local prompt encoded alone.

    ``local_embeddings (n, L, D)``: row ``i`` is local prompt ``i`` encoded on its own; its tokens
    ``offset .. offset+len`` replace ``full[start:end]`` (``offset`` 1 skips CLIP's start token; 0 for UMT5,
    see :func:`content_offset`). Returns a new tensor.
    """
    out = full_embedding.clone()
    for i, span in enumerate(spans):
        if span is None:
            continue
        start, end = span
        out[0, start:end] = local_embeddings[i, offset : offset + end - start]
    return out
