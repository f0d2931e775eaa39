import numpy as np
import pytest

from videoedit.errors import NotEnoughFramesError, VideoReadError
from videoedit.io.video import FrameSampling, count_frames, read_video
from videoedit.io.writers import write_gif, write_mp4


def test_sampling_indices():
    assert FrameSampling(0, 4, 1).indices(10) == [0, 1, 2, 3]
    assert FrameSampling(2, 3, 3).indices(10) == [2, 5, 8]
    assert FrameSampling(1, None, 4).indices(10) == [1, 5, 9]


def test_sampling_too_short_says_what_is_available():
    with pytest.raises(
        NotEnoughFramesError, match=r"has 10 frames.*needs frame 14.*Only 5 frames are available"
    ):
        FrameSampling(0, 8, 2).indices(10, "clip.mp4")


def test_sampling_rejects_bad_values():
    with pytest.raises(NotEnoughFramesError, match="stride must be >= 1"):
        FrameSampling(0, 4, 0)
    with pytest.raises(NotEnoughFramesError, match="num_frames must be >= 1"):
        FrameSampling(0, 0, 1)


def test_read_shared_mp4(shared_data):
    path = shared_data / "clips" / "wolf.mp4"
    assert count_frames(path) == 40
    video = read_video(path, FrameSampling(start=4, num_frames=3, stride=2))
    assert video.frames.shape == (3, 512, 512, 3) and video.frames.dtype == np.uint8
    assert video.indices == [4, 6, 8]
    assert video.fps == pytest.approx(10.0)  # 20 fps / stride 2
    assert video.frames.std() > 10  # real content, not a blank decode


def test_read_frame_folder(shared_data):
    folder = shared_data / "videograin" / "run_two_man" / "run_two_man"
    video = read_video(folder, FrameSampling(0, 16, 1))
    assert video.frames.shape == (16, 512, 512, 3)
    assert video.names[:2] == ["00000", "00001"]


def test_mp4_and_gif_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    # smooth content survives H.264 well; sides not multiples of 16 (and odd) must work
    base = np.linspace(0, 255, 70 * 90 * 3).reshape(70, 90, 3)
    frames = np.stack([np.roll(base, 3 * i, axis=1) for i in range(5)]).astype(np.uint8)
    write_mp4(tmp_path / "a.mp4", frames, fps=5)
    back = read_video(tmp_path / "a.mp4")
    assert back.frames.shape == (5, 70, 90, 3)
    assert back.fps == pytest.approx(5.0)
    assert np.abs(back.frames.astype(int) - frames).mean() < 4
    gif = rng.integers(0, 255, (3, 33, 41, 3), dtype=np.uint8)
    write_gif(tmp_path / "a.gif", gif, fps=4)
    assert read_video(tmp_path / "a.gif").frames.shape == (3, 33, 41, 3)
    odd = np.zeros((2, 31, 45, 3), np.uint8)
    write_mp4(tmp_path / "odd.mp4", odd)
    assert read_video(tmp_path / "odd.mp4").frames.shape[1:3] == (32, 46)  # padded to even sides
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_missing_video_message(tmp_path):
    with pytest.raises(VideoReadError, match=r"Video not found: .*nope\.mp4\. Set data\.path"):
        read_video(tmp_path / "nope.mp4")


def test_unreadable_video_message(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(VideoReadError, match=r"Could not decode video .*broken\.mp4"):
        read_video(bad)


def test_wrong_suffix_and_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(VideoReadError, match="not a video file"):
        read_video(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="holds no images"):
        read_video(tmp_path / "empty")


def test_too_few_frames_in_file(shared_data):
    with pytest.raises(NotEnoughFramesError, match=r"truck\.mp4 has 21 frames"):
        read_video(shared_data / "clips" / "truck.mp4", FrameSampling(0, 16, 2))


def test_written_files_follow_the_umask(tmp_path):
    import os

    from videoedit.io.atomic import write_text

    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
