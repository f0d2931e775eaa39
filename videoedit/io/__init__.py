"""Video, mask and result-tree I/O."""

from videoedit.io.masks import read_masks, write_masks
from videoedit.io.transforms import ResizeSpec, frames_to_tensor, tensor_to_frames
from videoedit.io.video import FrameSampling, VideoFrames, count_frames, read_video
from videoedit.io.writers import write_frames, write_gif, write_mp4, write_video

__all__ = [
    "FrameSampling",
    "ResizeSpec",
    "VideoFrames",
    "count_frames",
    "frames_to_tensor",
    "read_masks",
    "read_video",
    "tensor_to_frames",
    "write_frames",
    "write_gif",
    "write_masks",
    "write_mp4",
    "write_video",
]
