import imageio.v3 as iio
import numpy as np

from radiantforge import media


def _frames(n=6, h=33, w=47):
    """A smooth colour ramp with a moving bright square: content a video codec keeps well."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, 0.5 * np.ones_like(x)], axis=-1)
    frames = []
    for index in range(n):
        frame = base.copy()
        frame[5:15, 4 + 5 * index : 14 + 5 * index] = 1.0
        frames.append(frame)
    return frames


def test_turntable_files_read_back(tmp_path):
    frames = _frames()
    files = media.write_turntable(tmp_path, frames, name="spin", fps=10)
    gif = iio.imread(files["gif"], index=None)
    assert gif.shape[0] == len(frames) and gif.shape[1:3] == (33, 47)
    pngs = sorted((tmp_path / "spin").glob("frame_*.png"))
    assert len(pngs) == len(frames)
    assert np.array_equal(iio.imread(pngs[2]), media.to_uint8(frames[2]))  # PNG frames are lossless
    # MP4 via the bundled ffmpeg: odd sizes are padded to even, content survives lossy coding
    import imageio.v2 as iio2

    reader = iio2.get_reader(files["mp4"], format="FFMPEG")
    decoded = [frame for frame in reader]
    reader.close()
    assert len(decoded) == len(frames)
    assert decoded[0].shape[:2] == (34, 48)
    error = np.abs(decoded[3][:33, :47].astype(float) - media.to_uint8(frames[3]).astype(float)).mean()
    wrong_frame_error = np.abs(decoded[3][:33, :47].astype(float) - media.to_uint8(frames[0]).astype(float)).mean()
    assert error < 4 and error < wrong_frame_error / 2
    assert not list(tmp_path.glob("*.partial*"))


def test_depth_to_rgb_orders_near_bright():
    depth = np.array([[[1.0], [2.0], [0.0]]], dtype=np.float32)
    rgb = media.depth_to_rgb(depth)
    assert rgb[0, 0, 0] > rgb[0, 1, 0] > rgb[0, 2, 0] == 0
