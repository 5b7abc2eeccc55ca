"""Loading transforms.json datasets: the lego layout unchanged, nerfstudio style, downscaling,
compositing, point clouds, scene extent, and every kind of bad input."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from radiantforge.cameras import look_at_c2w_gl
from radiantforge.data.pointcloud import write_points_ply
from radiantforge.data.transforms import (
    HOLDOUT_EVERY,
    MAX_FRAMES,
    MAX_TRANSFORMS_BYTES,
    check_nerf_dataset,
    load_nerf_dataset,
)
from radiantforge.errors import InputError

# The first two frames of NeRF-synthetic lego's transforms_train.json, as published.
LEGO_CAMERA_ANGLE_X = 0.6911112070083618
LEGO_R0 = [
    [-0.9999021887779236, 0.004192245192825794, -0.013345719315111637, -0.05379832163453102],
    [-0.013988681137561798, -0.2996590733528137, 0.95394366979599, 3.845470428466797],
    [-4.656612873077393e-10, 0.9540371894836426, 0.29968830943107605, 1.2080823183059692],
    [0.0, 0.0, 0.0, 1.0],
]
LEGO_R1 = [
    [-0.9305422306060791, 0.11707554012537003, -0.34696459770202637, -1.398659110069275],
    [-0.3661845624446869, -0.29751041531562805, 0.8817007541656494, 3.5542497634887695],
    [7.450580596923828e-09, 0.9475130438804626, 0.3197172284126282, 1.2888214588165283],
    [0.0, 0.0, 0.0, 1.0],
]
LEGO_SIZE = 800


def write_json(path: Path, document) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=4))


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, compress_level=1)


def random_rgba(height, width, seed) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 4), dtype=np.uint8)


def orbit_matrices(n, radius=4.0) -> list:
    angles = torch.arange(n) * (2 * math.pi / n)
    eyes = torch.stack([radius * torch.cos(angles), radius * torch.sin(angles), torch.full((n,), 1.5)], -1)
    return look_at_c2w_gl(eyes, torch.zeros(3)).tolist()


def small_synthetic_dataset(root: Path, width=24, height=16, n_train=2, n_test=1) -> Path:
    """NeRF-synthetic layout with small RGBA PNGs: the base that the bad-input cases break."""
    matrices = orbit_matrices(n_train + n_test)
    for split, indices in (("train", range(n_train)), ("test", range(n_train, n_train + n_test))):
        frames = []
        for j, i in enumerate(indices):
            write_png(root / split / f"r_{j}.png", random_rgba(height, width, seed=i))
            frames.append({"file_path": f"./{split}/r_{j}", "rotation": 0.0126, "transform_matrix": matrices[i]})
        write_json(root / f"transforms_{split}.json", {"camera_angle_x": 0.8, "frames": frames})
    return root


# ----------------------------------------------------------------------------- lego layout


def lego_pattern(seed=0):
    """An 800x800 RGBA image in lego's style: a transparent background with black RGB, an
    opaque object, a half-transparent band, and a 1-pixel checkerboard that downscaling must average."""
    g = np.random.default_rng(seed)
    rgba = np.zeros((LEGO_SIZE, LEGO_SIZE, 4), np.uint8)
    rgba[200:600, 200:600, :3] = g.integers(0, 256, size=(400, 400, 3))
    rgba[200:600, 200:600, 3] = 255
    rgba[100:140, :, :3] = (200, 40, 10)
    rgba[100:140, :, 3] = 128
    checker = (np.add.outer(np.arange(100), np.arange(100)) % 2 * 255).astype(np.uint8)
    rgba[650:750, 650:750, :3] = checker[..., None]
    rgba[650:750, 650:750, 3] = 255
    return rgba


def composite(rgba: np.ndarray, background) -> np.ndarray:
    pixels = rgba.astype(np.float64) / 255
    alpha = pixels[..., 3:]
    return pixels[..., :3] * alpha + np.asarray(background) * (1 - alpha)


@pytest.fixture(scope="module")
def lego_like(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lego")
    frames = []
    for i, matrix in enumerate((LEGO_R0, LEGO_R1)):
        write_png(root / "train" / f"r_{i}.png", lego_pattern(seed=i))
        frames.append({"file_path": f"./train/r_{i}", "rotation": 0.012566370614359171, "transform_matrix": matrix})
    write_json(root / "transforms_train.json", {"camera_angle_x": LEGO_CAMERA_ANGLE_X, "frames": frames})
    write_png(root / "test" / "r_0.png", lego_pattern(seed=7))
    test_frames = [{"file_path": "./test/r_0", "rotation": 0.0, "transform_matrix": LEGO_R1}]
    write_json(root / "transforms_test.json", {"camera_angle_x": LEGO_CAMERA_ANGLE_X, "frames": test_frames})
    write_json(root / "transforms_val.json", {"camera_angle_x": LEGO_CAMERA_ANGLE_X, "frames": frames[:1]})
    return root


def test_lego_layout_loads_unchanged(lego_like):
    dataset = load_nerf_dataset(lego_like)
    assert set(dataset.splits) == {"train", "test", "val"}
    train = dataset.train
    assert train.names == ["./train/r_0", "./train/r_1"]
    assert train.images.shape == (2, LEGO_SIZE, LEGO_SIZE, 3) and train.images.dtype == torch.float32
    assert train.alphas.shape == (2, LEGO_SIZE, LEGO_SIZE, 1)
    assert train.cameras.width == LEGO_SIZE and train.cameras.height == LEGO_SIZE
    # c2w straight from the file; lego's well-known focal length of 1111.11 px.
    torch.testing.assert_close(train.cameras.c2w_gl, torch.tensor([LEGO_R0, LEGO_R1]), rtol=0, atol=0)
    focal = 0.5 * LEGO_SIZE / math.tan(0.5 * LEGO_CAMERA_ANGLE_X)
    assert abs(focal - 1111.111) < 1e-3
    expected_k = torch.tensor([[focal, 0, 400.0], [0, focal, 400.0], [0, 0, 1]])
    torch.testing.assert_close(train.cameras.intrinsics, expected_k.expand(2, 3, 3))
    # Compositing over the default white background, pixel for pixel.
    for i in range(2):
        np.testing.assert_allclose(train.images[i].numpy(), composite(lego_pattern(i), (1, 1, 1)), atol=1e-6)
        np.testing.assert_allclose(train.alphas[i, ..., 0].numpy(), lego_pattern(i)[..., 3] / 255, atol=1e-7)
    # Lego's cameras look at the world origin: it projects to the image centre (GL -> CV chain).
    w2c = train.cameras.world_to_camera_cv()[0]
    point = w2c[:3, 3]  # the origin in camera coordinates
    assert point[2] > 0
    u = focal * point[0] / point[2] + 400
    v = focal * point[1] / point[2] + 400
    assert abs(u - 400) < 1 and abs(v - 400) < 1
    assert dataset.points is None
    assert dataset.test.names == ["./test/r_0"] and dataset.val.names == ["./train/r_0"]


def test_lego_layout_with_downscale_and_background(lego_like):
    background = (0.0, 0.25, 1.0)
    dataset = load_nerf_dataset(lego_like, downscale=2, background=background, splits=("train",))
    assert set(dataset.splits) == {"train"}  # only what was asked for
    train = dataset.train
    half = LEGO_SIZE // 2
    assert train.images.shape == (2, half, half, 3) and train.alphas.shape == (2, half, half, 1)
    assert (train.cameras.width, train.cameras.height) == (half, half)
    focal = 0.5 * half / math.tan(0.5 * LEGO_CAMERA_ANGLE_X)
    expected_k = torch.tensor([[focal, 0, 200.0], [0, focal, 200.0], [0, 0, 1]])
    torch.testing.assert_close(train.cameras.intrinsics[0], expected_k)
    # Area averaging of the composited image: every output pixel is the mean of a 2x2 block.
    expected = composite(lego_pattern(1), background).reshape(half, 2, half, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(train.images[1].numpy(), expected, atol=1e-5)
    # The 1-pixel checkerboard becomes flat grey (antialiased), not a sampled 0 or 1.
    np.testing.assert_allclose(train.images[0, 330:370, 330:370].numpy(), 0.5, atol=1e-6)
    torch.testing.assert_close(dataset.background, torch.tensor(background))


# ----------------------------------------------------------------------------- nerfstudio style


def pinhole(fx, fy, cx, cy) -> torch.Tensor:
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def write_nerfstudio(root: Path, n_frames: int, width=24, height=16, **top_level) -> list[np.ndarray]:
    """One transforms.json with JPG frames; returns the RGB images written."""
    matrices = orbit_matrices(n_frames)
    images, frames = [], []
    for i in range(n_frames):
        colour = np.array([10 * i, 255 - 10 * i, 128], np.uint8)  # flat: JPEG keeps it exactly enough
        image = np.broadcast_to(colour, (height, width, 3)).copy()
        path = root / "images" / f"frame_{i + 1:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=95)
        images.append(image)
        frames.append({"file_path": f"images/frame_{i + 1:05d}.jpg", "transform_matrix": matrices[i]})
    write_json(root / "transforms.json", {**top_level, "frames": frames})
    return images


def test_nerfstudio_single_file_with_holdout(tmp_path):
    n = 17
    images = write_nerfstudio(
        tmp_path, n, camera_model="OPENCV", fl_x=30.0, fl_y=31.0, cx=11.5, cy=8.25, w=24, h=16,
        k1=0.01, k2=0.0, p1=0.0, p2=0.0,
    )  # fmt: skip
    dataset = load_nerf_dataset(tmp_path)
    test_indices = [i for i in range(n) if i % HOLDOUT_EVERY == 0]
    assert test_indices == [0, 8, 16]
    assert dataset.test.names == [f"images/frame_{i + 1:05d}.jpg" for i in test_indices]
    assert dataset.train.names == [f"images/frame_{i + 1:05d}.jpg" for i in range(n) if i not in test_indices]
    assert dataset.val is None
    assert dataset.train.alphas is None and dataset.test.alphas is None
    torch.testing.assert_close(
        dataset.train.cameras.intrinsics[0], torch.tensor([[30.0, 0, 11.5], [0, 31.0, 8.25], [0, 0, 1]])
    )
    torch.testing.assert_close(dataset.test.cameras.c2w_gl[1], torch.tensor(orbit_matrices(n)[8]))
    np.testing.assert_allclose(dataset.test.images[1].numpy(), images[8] / 255, atol=2 / 255)
    assert any("held out" in note for note in dataset.notes)
    assert any("distortion" in note for note in dataset.notes)


def test_per_frame_intrinsics_and_camera_angle_y(tmp_path):
    write_nerfstudio(tmp_path, 3, fl_x=20.0)
    document = json.loads((tmp_path / "transforms.json").read_text())
    document["frames"][1].update(fl_x=25.0, fl_y=26.0, cx=12.5, cy=7.0)
    document["frames"][2].update(camera_angle_x=1.2, camera_angle_y=0.9)  # the frame's own keys win
    write_json(tmp_path / "transforms.json", document)
    dataset = load_nerf_dataset(tmp_path)
    intrinsics = {name: k for name, k in zip(dataset.train.names, dataset.train.cameras.intrinsics)}
    torch.testing.assert_close(intrinsics["images/frame_00002.jpg"], pinhole(25.0, 26.0, 12.5, 7.0))
    fx = 12.0 / math.tan(0.6)  # half-width over tan(half-angle)
    fy = 8.0 / math.tan(0.45)
    torch.testing.assert_close(intrinsics["images/frame_00003.jpg"], pinhole(fx, fy, 12.0, 8.0))
    torch.testing.assert_close(dataset.test.cameras.intrinsics[0], pinhole(20.0, 20.0, 12.0, 8.0))


def test_fractional_downscale_keeps_mean_and_scales_intrinsics(tmp_path):
    root = small_synthetic_dataset(tmp_path, width=30, height=18)
    full = load_nerf_dataset(root)
    small = load_nerf_dataset(root, downscale=1.5)
    assert small.train.images.shape == (2, 12, 20, 3)
    expected_k = full.train.cameras.intrinsics.clone()
    expected_k[:, 0] *= 20 / 30
    expected_k[:, 1] *= 12 / 18
    torch.testing.assert_close(small.train.cameras.intrinsics, expected_k)
    # Area averaging preserves each image's mean colour (a sampling resize would not).
    for name in ("images", "alphas"):
        small_mean = getattr(small.train, name).mean(dim=(1, 2))
        full_mean = getattr(full.train, name).mean(dim=(1, 2))
        torch.testing.assert_close(small_mean, full_mean, atol=1e-5, rtol=0)


def test_background_compositing_and_mixed_alpha(tmp_path):
    root = small_synthetic_dataset(tmp_path, n_train=2)
    rgba = np.zeros((16, 24, 4), np.uint8)
    rgba[:, :8] = (255, 0, 0, 255)  # opaque red
    rgba[:, 8:16] = (255, 0, 0, 0)  # invisible red
    rgba[:, 16:] = (0, 255, 0, 51)  # 20% green
    write_png(root / "train" / "r_0.png", rgba)
    write_png(root / "train" / "r_1.png", np.full((16, 24, 3), 100, np.uint8))  # RGB, no alpha
    dataset = load_nerf_dataset(root, background=(0.0, 0.0, 1.0))
    image = dataset.train.images[0]
    torch.testing.assert_close(image[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(image[0, 10], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(image[0, 20], torch.tensor([0.0, 0.2, 0.8]))
    alphas = dataset.train.alphas
    assert alphas is not None and torch.all(alphas[1] == 1.0)  # the RGB image counts as opaque
    torch.testing.assert_close(dataset.train.images[1], torch.full((16, 24, 3), 100 / 255))

    # The same with the RGB image first: it still counts as opaque.
    (root / "train" / "r_0.png").rename(root / "train" / "swap.png")
    (root / "train" / "r_1.png").rename(root / "train" / "r_0.png")
    (root / "train" / "swap.png").rename(root / "train" / "r_1.png")
    swapped = load_nerf_dataset(root, background=(0.0, 0.0, 1.0))
    assert torch.all(swapped.train.alphas[0] == 1.0)
    torch.testing.assert_close(swapped.train.alphas[1], alphas[0])
    torch.testing.assert_close(swapped.train.images[1], image)


def test_points_job_folder_and_scene_extent(tmp_path):
    data = tmp_path / "job" / "data"
    small_synthetic_dataset(data)
    eyes = torch.tensor([[2.0, 0, 0], [-2.0, 0, 0], [0, 2.0, 1.0], [0, -2.0, 1.0]])
    matrices = look_at_c2w_gl(eyes, torch.zeros(3)).tolist()
    frames = [{"file_path": f"./train/r_{i % 2}", "transform_matrix": m} for i, m in enumerate(matrices)]
    write_json(data / "transforms_train.json", {"camera_angle_x": 0.8, "frames": frames})
    xyz, rgb = torch.randn(20, 3), torch.rand(20, 3)
    write_points_ply(data / "points3d.ply", xyz, rgb)

    dataset = load_nerf_dataset(tmp_path / "job")  # a job folder: the dataset is in data/
    assert dataset.root == data
    assert load_nerf_dataset(data / "transforms_train.json", splits=("train",)).root == data
    assert torch.equal(dataset.points.xyz, xyz)
    centre, radius = dataset.scene_extent()
    torch.testing.assert_close(centre, torch.tensor([0.0, 0.0, 0.5]))
    assert radius == pytest.approx(1.1 * math.sqrt(2.0**2 + 0.5**2), rel=1e-6)


def test_nerfstudio_ply_file_path(tmp_path):
    write_nerfstudio(tmp_path, 2, fl_x=20.0, ply_file_path="sparse_pc.ply")
    write_points_ply(tmp_path / "sparse_pc.ply", torch.ones(5, 3), torch.zeros(5, 3))
    dataset = load_nerf_dataset(tmp_path)
    assert len(dataset.points) == 5
    assert dataset.train.names == ["images/frame_00002.jpg"] and dataset.test.names == ["images/frame_00001.jpg"]


# ----------------------------------------------------------------------------- bad input


def edit_json(path: Path, change):
    document = json.loads(path.read_text())
    change(document)
    write_json(path, document)


def set_train_frame(index, **values):
    return lambda root: edit_json(root / "transforms_train.json", lambda d: d["frames"][index].update(values))


def set_train_top(**values):
    return lambda root: edit_json(root / "transforms_train.json", lambda d: d.update(values))


def delete_train_key(key):
    return lambda root: edit_json(root / "transforms_train.json", lambda d: d.pop(key))


def write_text(relative, text):
    return lambda root: (root / relative).write_text(text)


def set_matrix_entry(value):
    def change(document):
        document["frames"][1]["transform_matrix"][2][1] = value

    return lambda root: edit_json(root / "transforms_train.json", change)


def set_last_matrix_row(row):
    def change(document):
        document["frames"][0]["transform_matrix"][3] = row

    return lambda root: edit_json(root / "transforms_train.json", change)


def scale_rotation(root):
    def change(document):
        matrix = document["frames"][0]["transform_matrix"]
        for row in matrix[:3]:
            row[:3] = [2 * v for v in row[:3]]

    edit_json(root / "transforms_train.json", change)


BAD_INPUTS = {
    # name: (how to break the base dataset, file named in the message, field)
    "malformed json": (write_text("transforms_train.json", '{"camera_angle_x": 0.8,\n "frames": [\n  {"file_path" "x"}]}'),
                       "transforms_train.json", "line 3 column 16"),
    "json not an object": (write_text("transforms_test.json", "[1, 2]"), "transforms_test.json", None),
    "frames missing": (delete_train_key("frames"), "transforms_train.json", "frames"),
    "frames not a list": (set_train_top(frames={"a": 1}), "transforms_train.json", "frames"),
    "empty split": (lambda r: edit_json(r / "transforms_test.json", lambda d: d.update(frames=[])),
                    "transforms_test.json", "frames"),
    "frame not an object": (set_train_top(frames=["./train/r_0"]), "transforms_train.json", "frames[0]"),
    "file_path missing": (lambda r: edit_json(r / "transforms_train.json", lambda d: d["frames"][1].pop("file_path")),
                          "transforms_train.json", "frames[1].file_path"),
    "image missing": (lambda r: (r / "train" / "r_1.png").unlink(), "transforms_train.json", "frames[1].file_path"),
    "image undecodable": (write_text("train/r_1.png", "not a png"), "transforms_train.json", "frames[1].file_path"),
    "image width not w": (set_train_top(w=32, h=16), "transforms_train.json", "w"),
    "frame height not h": (set_train_frame(1, h=20), "transforms_train.json", "frames[1].h"),
    "cx outside image": (set_train_top(cx=400.0), "transforms_train.json", "cx"),
    "cy negative in frame": (set_train_frame(0, cy=-3.0), "transforms_train.json", "frames[0].cy"),
    "NaN in matrix": (set_matrix_entry(float("nan")), "transforms_train.json", "frames[1].transform_matrix"),
    "inf in matrix": (set_matrix_entry(float("inf")), "transforms_train.json", "frames[1].transform_matrix"),
    "string in matrix": (set_matrix_entry("0.5"), "transforms_train.json", "frames[1].transform_matrix"),
    "3x4 matrix": (set_train_frame(0, transform_matrix=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]),
                   "transforms_train.json", "frames[0].transform_matrix"),
    "matrix missing": (lambda r: edit_json(r / "transforms_train.json", lambda d: d["frames"][0].pop("transform_matrix")),
                       "transforms_train.json", "frames[0].transform_matrix"),
    "bad last row": (set_last_matrix_row([0, 0, 1, 1]), "transforms_train.json", "frames[0].transform_matrix"),
    "not a rotation": (scale_rotation, "transforms_train.json", "frames[0].transform_matrix"),
    "no focal length": (delete_train_key("camera_angle_x"), "transforms_train.json", "fl_x / camera_angle_x"),
    "angle out of range": (set_train_top(camera_angle_x=4.0), "transforms_train.json", "camera_angle_x"),
    "angle a string": (set_train_top(camera_angle_x="0.8"), "transforms_train.json", "camera_angle_x"),
    "focal zero in frame": (set_train_frame(1, fl_x=0), "transforms_train.json", "frames[1].fl_x"),
    "fisheye camera": (set_train_top(camera_model="OPENCV_FISHEYE"), "transforms_train.json", "camera_model"),
    "mixed image sizes": (lambda r: write_png(r / "train" / "r_1.png", random_rgba(20, 24, seed=5)),
                          "transforms_train.json", "frames[1].file_path"),
    "bad points file": (write_text("points3d.ply", "ply\nformat ascii 1.0\nend_header\n"), "points3d.ply", "vertex"),
    "ply_file_path missing": (set_train_top(ply_file_path="missing.ply"), "transforms_train.json", "ply_file_path"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_file_and_field(tmp_path, case):
    break_dataset, file_name, field = BAD_INPUTS[case]
    root = small_synthetic_dataset(tmp_path)
    break_dataset(root)
    with pytest.raises(InputError) as caught:
        load_nerf_dataset(root)
    error = caught.value
    message = str(error)
    assert error.file is not None and Path(error.file).name == file_name, message
    assert file_name in message
    if field is not None:
        assert error.field == field, message
        assert field in message
    assert error.__cause__ is None or isinstance(error.__cause__, InputError), "leaks a library traceback"


def test_bad_input_messages_say_what_was_expected(tmp_path):
    root = small_synthetic_dataset(tmp_path)
    (root / "train" / "r_1.png").unlink()
    with pytest.raises(InputError, match=r"image not found: .*train/r_1\.png"):
        load_nerf_dataset(root)
    write_png(root / "train" / "r_1.png", random_rgba(20, 24, seed=5))
    with pytest.raises(InputError, match=r"24x20 pixels but the first image of this split \(\./train/r_0\) is 24x16"):
        load_nerf_dataset(root)
    set_train_top(w=24, h=20)(root)
    with pytest.raises(InputError, match=r"r_0\.png is 24x16 pixels but h = 20"):
        load_nerf_dataset(root)
    write_text("transforms_train.json", '{"frames": [\n  {,}]}')(root)
    with pytest.raises(InputError, match=r"line 2 column 4: not valid JSON"):
        load_nerf_dataset(root)


def test_bad_folder_and_arguments(tmp_path):
    with pytest.raises(InputError, match="not found") as caught:
        load_nerf_dataset(tmp_path / "nowhere")
    assert "nowhere" in str(caught.value)
    with pytest.raises(InputError) as caught:
        load_nerf_dataset(tmp_path)  # an empty folder
    assert caught.value.field == "transforms_train.json" and str(tmp_path) in str(caught.value)

    root = small_synthetic_dataset(tmp_path / "ok")
    for bad in (0.5, float("nan"), "two"):
        with pytest.raises(InputError) as caught:
            load_nerf_dataset(root, downscale=bad)
        assert caught.value.field == "downscale"
    for bad in ((1, 1), (0, 0, 2), "white"):
        with pytest.raises(InputError) as caught:
            load_nerf_dataset(root, background=bad)
        assert caught.value.field == "background"
    with pytest.raises(InputError) as caught:
        load_nerf_dataset(root, splits=("train", "holdout"))
    assert caught.value.field == "splits"


def test_transforms_file_size_and_frame_count_are_bounded_before_any_frame_is_checked(tmp_path):
    """A client's transforms file with hundreds of thousands of frames once took seconds and
    hundreds of MB of the service's memory before it was refused; both bounds now come first."""
    root = small_synthetic_dataset(tmp_path)
    document = json.loads((root / "transforms_train.json").read_text())
    document["frames"] = document["frames"][:1] * (MAX_FRAMES + 1)
    (root / "transforms_train.json").write_text(json.dumps(document))
    with pytest.raises(InputError, match=f"lists {MAX_FRAMES + 1:,} frames; at most {MAX_FRAMES:,}") as caught:
        check_nerf_dataset(root)
    assert caught.value.field == "frames" and Path(caught.value.file).name == "transforms_train.json"

    padding = " " * (MAX_TRANSFORMS_BYTES + 1 - len(json.dumps(document)))
    (root / "transforms_train.json").write_text(json.dumps(document) + padding)
    with pytest.raises(InputError, match=f"a transforms file may be at most {MAX_TRANSFORMS_BYTES // 2**20} MB") as caught:
        check_nerf_dataset(root)
    assert Path(caught.value.file).name == "transforms_train.json"
