"""ST-Layout attention kernels: full-frame self-attention with space-time layout modulation, memory-bounded.

The modulation (DenseDiffusion's, extended to space-time by VideoGrain) acts on the scaled logits
``s = q k^T * scale`` of each query row before the softmax::

    s += M * S*w*treg * (rowmax - s)          # positive pairs pulled towards the row max
    s -= (1 - M) * S*w*treg * (s - rowmin)    # negative pairs pushed towards the row min

With a binary pair mask ``M`` this is ``s' = lerp(s, where(M, rowmax, rowmin), g)`` with
``g = S * w * treg`` per query row, which is how it is computed here. Row max/min need every key of a
query, so queries are processed in chunks holding all their keys, never ``(F*hw)^2``. The pair mask of a
chunk comes from region membership (``member_q @ member_k^T > 0``), so overlapping regions work.

Memory: :func:`chunk_rows` counts every temporary of one chunk (scores, pair mask, scaled queries, the
product with V, the recorder's map), and each chunk's buffers are freed before the next chunk allocates
its own, so the peak of a call is ``chunk_budget_bytes`` on top of its inputs, its output, and per key
group the gathered keys/values and their compute-dtype copies (``tests/attention/test_st_layout.py``
asserts it with an exact tensor-memory counter; ``benchmarks/bench_st_layout.py --memory`` measures it).

Frame spans: every frame's queries attend to the keys of all frames (official), or to a sliding window
of ``window_size`` neighbouring frames plus the first frame (memory linear in the number of frames).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def modulate_logits(logits: torch.Tensor, positive: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Apply the layout modulation in place and return ``logits``.

    ``s' = (1 - g) s + g lo + g (hi - lo) M``: the official two-step formula for a binary ``M``, computed
    without a ``where`` buffer.

    Args:
        logits: ``(..., Q, K)`` scaled scores.
        positive: ``(Q, K)`` (or broadcastable) pair mask ``M``, bool or 0/1 floats.
        strength: ``(Q,)`` (or broadcastable to ``(..., Q)``) ``g = S * w * treg``.
    """
    g = strength.unsqueeze(-1).to(logits.dtype)
    lo, hi = torch.aminmax(logits, dim=-1, keepdim=True)
    return logits.mul_(1 - g).add_(g * lo).addcmul_(positive.to(logits.dtype), g * (hi - lo))


@dataclass
class SelfModulation:
    """What the self-attention modulation of one call needs.

    Attributes:
        member: ``(F*N, R)`` float region membership of every token (frame-major), for queries and keys.
        size_fn: ``(query_member (Q, R), key_member (K, R), num_key_frames) -> (Q,)`` size factors.
        weight: ``sreg * treg`` (0 disables the modulation).
    """

    member: torch.Tensor
    size_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
    weight: float


@dataclass(frozen=True)
class FrameSpan:
    """Which frames' keys each query frame sees: ``all`` (official) or ``window`` (+ the first frame)."""

    mode: str = "all"
    window_size: int = 4

    def key_frames(self, frame: int, num_frames: int) -> list[int]:
        if self.mode == "all":
            return list(range(num_frames))
        if self.mode != "window":
            raise ValueError(f"frame span must be 'all' or 'window', got {self.mode!r}")
        half = self.window_size // 2
        start = max(0, min(frame - half, num_frames - self.window_size))
        frames = set(range(start, min(num_frames, start + self.window_size))) | {0}
        return sorted(frames)

    def groups(self, num_frames: int) -> Iterator[tuple[list[int], list[int]]]:
        """``(query frames, key frames)`` groups; query frames in a group share their key frames."""
        if self.mode == "all":
            yield list(range(num_frames)), list(range(num_frames))
            return
        current: list[int] = []
        keys: list[int] | None = None
        for f in range(num_frames):
            k = self.key_frames(f, num_frames)
            if keys is not None and k != keys:
                yield current, keys
                current = []
            current.append(f)
            keys = k
        if current:
            yield current, keys or []


def _token_index(frames: list[int], tokens_per_frame: int, device: torch.device) -> torch.Tensor:
    f = torch.as_tensor(frames, device=device)
    return (f[:, None] * tokens_per_frame + torch.arange(tokens_per_frame, device=device)).reshape(-1)


def _contiguous(frames: list[int]) -> bool:
    return frames == list(range(frames[0], frames[0] + len(frames)))


def chunk_rows(
    heads: int,
    keys: int,
    element_bytes: int,
    budget_bytes: int,
    temporaries: int = 3,
    head_dim: int | None = None,
    pair_mask: bool = False,
    record: bool = False,
) -> int:
    """Query rows per chunk whose temporaries fit in ``budget_bytes`` (at least one row).

    Without ``head_dim``: ``temporaries`` score-sized ``(heads, keys)`` buffers per row (plain chunked
    attention). With ``head_dim``: the exact temporaries of one chunk of :func:`full_frame_attention`:
    the scores (softmax in place), the pair mask ``(keys,)`` when modulated, the queries' dtype copy and
    their scaled version ``(heads, head_dim)`` each (the product with V reuses that room), a few per-row
    statistics (max, min, sum: ``8 * heads`` elements), and the recorder's head-averaged fp32 map ``(keys,)``.
    """
    if head_dim is None:
        per_row = heads * keys * element_bytes * temporaries
    else:
        per_row = heads * keys + 2 * heads * head_dim + (keys if pair_mask else 0) + 8 * heads
        per_row = per_row * element_bytes + (4 * keys if record else 0)
    return max(1, budget_bytes // max(1, per_row))


def full_frame_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_frames: int,
    scale: float,
    span: FrameSpan = FrameSpan(),
    modulation: SelfModulation | None = None,
    chunk_budget_bytes: int = 256 * 2**20,
    record: Callable[[torch.Tensor, list[int], list[int], int], None] | None = None,
) -> torch.Tensor:
    """Self-attention of every frame's queries over the keys of the frames in its span.

    Args:
        q, k, v: ``(heads, F*N, d)`` one branch's projections, frames concatenated (frame-major).
        num_frames: ``F``.
        scale: logit scale (``1/sqrt(d)``).
        span: the frame span of each query frame.
        modulation: layout modulation, or ``None`` for plain attention.
        chunk_budget_bytes: memory for the temporaries of one query chunk (see :func:`chunk_rows`); the
            peak of the call is this plus the inputs, the output and the gathered/converted keys and values.
        record: ``record(probs (heads, Q, K), query_frames, key_frames, row_offset)`` receives the
            attention probabilities of each chunk (forces the explicit path; used to collect maps).

    Returns:
        ``(heads, F*N, d)``.
    """
    heads, total, head_dim = q.shape
    n = total // num_frames
    out = torch.empty_like(q)
    explicit = (modulation is not None and modulation.weight != 0) or record is not None
    compute_dtype = (
        torch.float32 if q.dtype in (torch.float16, torch.bfloat16) and q.device.type == "cpu" else q.dtype
    )
    elem = torch.finfo(compute_dtype).bits // 8
    modulated = modulation is not None and modulation.weight != 0
    for q_frames, k_frames in span.groups(num_frames):
        if not _contiguous(q_frames):  # pragma: no cover - groups are contiguous by construction
            raise AssertionError("query frame groups must be contiguous")
        q_sl = slice(q_frames[0] * n, (q_frames[-1] + 1) * n)
        qq = q[:, q_sl]
        if len(k_frames) == num_frames:
            kk, vv, k_idx = k, v, None
        else:
            k_idx = _token_index(k_frames, n, q.device)
            kk, vv = k[:, k_idx], v[:, k_idx]
        if not explicit:
            out[:, q_sl] = F.scaled_dot_product_attention(qq[None], kk[None], vv[None], scale=scale)[0]
            del kk, vv
            continue
        member_kt = None
        if modulated:
            member_k = (
                modulation.member if k_idx is None else modulation.member[k_idx.to(modulation.member.device)]
            ).to(q.device)
            member_kt = member_k.to(compute_dtype).T  # (R, K)
        rows = chunk_rows(
            heads,
            kk.shape[1],
            elem,
            chunk_budget_bytes,
            head_dim=head_dim,
            pair_mask=modulated,
            record=record is not None,
        )
        kt = kk.transpose(-1, -2).to(compute_dtype)
        vc = vv.to(compute_dtype)
        del kk, vv  # the gathered copies (window span) live on only as kt / vc
        for start in range(0, qq.shape[1], rows):
            stop = min(start + rows, qq.shape[1])
            logits = torch.matmul(qq[:, start:stop].to(compute_dtype) * scale, kt)  # (heads, c, K)
            if member_kt is not None:
                rows_global = slice(q_sl.start + start, q_sl.start + stop)
                member_q = modulation.member[rows_global].to(q.device)
                positive = torch.matmul(member_q.to(compute_dtype), member_kt).clamp_(max=1)  # (c, K) 0/1
                g = modulation.size_fn(member_q, member_k, len(k_frames)) * modulation.weight
                modulate_logits(logits, positive, g)
                del positive  # freed before the next buffer of this chunk
            # softmax(x) = exp(x - max) / sum, normalised after the product with V where that is exact
            probs = logits.sub_(logits.amax(-1, keepdim=True)).exp_()
            del logits
            denom = probs.sum(-1, keepdim=True, dtype=torch.float32)
            target = out[:, q_sl.start + start : q_sl.start + stop]
            if record is not None or compute_dtype not in (torch.float32, torch.float64):
                probs.div_(denom.to(compute_dtype))  # fp16: keep sums and products in range
                if record is not None:
                    record(probs, q_frames, k_frames, start)
                target.copy_(torch.matmul(probs, vc))
            else:
                target.copy_(torch.matmul(probs, vc).div_(denom))
            del probs  # the next chunk's scores are allocated only after this one's are gone
        del kt, vc
    return out


def reference_full_frame_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_frames: int,
    scale: float,
    pair_mask: torch.Tensor | None = None,
    size: torch.Tensor | None = None,
    weight: float = 0.0,
    span: FrameSpan = FrameSpan(),
) -> torch.Tensor:
    """The straightforward formula with full matrices (for tests and benchmarks only).

    ``pair_mask (F*N, F*N)`` bool and ``size (F*N,)`` are the official ``sreg_maps > 0`` and
    ``reg_sizes`` (for the ``all`` span). Keys outside a query's span are excluded with ``-inf``.
    """
    total = q.shape[1]
    n = total // num_frames
    logits = torch.einsum("hqd,hkd->hqk", q.double(), k.double()) * scale
    allowed = torch.zeros(total, total, dtype=torch.bool)
    for f in range(num_frames):
        for kf in span.key_frames(f, num_frames):
            allowed[f * n : (f + 1) * n, kf * n : (kf + 1) * n] = True
    if pair_mask is not None and weight:
        hi = logits.masked_fill(~allowed, -math.inf).amax(-1, keepdim=True)
        lo = logits.masked_fill(~allowed, math.inf).amin(-1, keepdim=True)
        g = (size.double() * weight)[:, None]
        m = pair_mask.double()
        logits = logits + m * g * (hi - logits)
        logits = logits - (1 - m) * g * (logits - lo)
    logits = logits.masked_fill(~allowed, -math.inf)
    return torch.einsum("hqk,hkd->hqd", logits.softmax(-1), v.double()).to(q.dtype)


def cross_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    positive: torch.Tensor | None = None,
    strength: torch.Tensor | None = None,
    record: Callable[[torch.Tensor], None] | None = None,
    record_logits: bool = False,
) -> torch.Tensor:
    """Cross-attention of one frame batch with optional layout modulation.

    Args:
        q: ``(B, heads, N, d)``; k, v: ``(B, heads, 77, d)``.
        positive: ``(B, N, 77)`` bool token ownership ``M`` (``None``: plain attention).
        strength: ``(B, N)`` ``g = S * creg * treg``.
        record: receives ``(B, heads, N, 77)`` maps: the probabilities, or with ``record_logits`` the
            scaled scores before modulation and softmax (what the official attention store records).
    """
    if positive is None and record is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    compute = torch.float32 if q.dtype != torch.float64 else q.dtype
    logits = torch.matmul(q.to(compute), k.transpose(-1, -2).to(compute)) * scale
    if record is not None and record_logits:
        record(logits)
    if positive is not None:
        modulate_logits(logits, positive.to(q.device)[:, None], strength.to(q.device)[:, None])
    probs = logits.softmax(-1)
    if record is not None and not record_logits:
        record(probs)
    return torch.matmul(probs, v.to(compute)).to(q.dtype)
