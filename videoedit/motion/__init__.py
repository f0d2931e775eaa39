"""Motion: optical flow, warping, occlusion, discrepancy masks and flow caches.

Core infrastructure shared by attention processors, pipelines, metrics and annotators (which use it like
everyone else).

Conventions (used everywhere in the project):

* A flow is a float tensor ``(N, 2, H, W)`` in **pixels**; channel 0 is the horizontal displacement
  ``dx`` (towards +x, right), channel 1 the vertical ``dy`` (towards +y, down).
* ``flow_a_to_b`` says where each pixel of frame ``a`` is in frame ``b``: pixel ``p`` of ``a`` shows the
  same point as ``p + flow_a_to_b(p)`` of ``b``.
* :func:`warp` is a *backward* warp: ``warp(x_b, flow_a_to_b)`` samples ``x_b`` at ``p + flow(p)`` and
  so returns ``x_b`` aligned with frame ``a``. To bring the previous frame into the current one, use
  the flow **current -> previous**: ``warp(prev, flow_cur_to_prev)``.
* :func:`compose` chains flows: ``compose(flow_a_to_b, flow_b_to_c) = flow_a_to_c``.

Modules: :mod:`~videoedit.motion.warping` (geometry), :mod:`~videoedit.motion.estimators` (RAFT, DIS,
clip flows), :mod:`~videoedit.motion.cache` (flows on disk), :mod:`~videoedit.motion.discrepancy`
(source-vs-generated motion masks).
"""

from videoedit.motion.cache import FlowCache
from videoedit.motion.estimators import (
    RAFT_URL_NAME,
    DISFlow,
    FlowEstimator,
    RAFTFlow,
    build_flow_estimator,
    raft_weights_path,
    to_uint8_frames,
    video_flows,
)
from videoedit.motion.warping import (
    accumulate,
    accumulate_backward,
    compose,
    flow_to_tokens,
    occlusion,
    out_of_frame,
    photometric_error,
    resize_flow,
    warp,
)

__all__ = [
    "RAFT_URL_NAME",
    "DISFlow",
    "FlowCache",
    "FlowEstimator",
    "RAFTFlow",
    "accumulate",
    "accumulate_backward",
    "build_flow_estimator",
    "compose",
    "flow_to_tokens",
    "occlusion",
    "out_of_frame",
    "photometric_error",
    "raft_weights_path",
    "resize_flow",
    "to_uint8_frames",
    "video_flows",
    "warp",
]
