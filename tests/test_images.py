"""Image decoding: every format and colour mode comes out as upright (H, W, 3) uint8 RGB, or a clear error."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featcache.errors import FeatcacheError, ImageDecodeError
from featcache.ingest.decode import collect_image_files, decode_image, is_image_path, read_image

WHITE = (255, 255, 255)


def blocks(h: int = 16, w: int = 32) -> np.ndarray:
    """Four flat 8-aligned colour quadrants: exact in lossless formats, close in JPEG, distinct under any flip."""
    arr = np.empty((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2] = (220, 30, 30)
    arr[: h // 2, w // 2:] = (30, 200, 40)
    arr[h // 2:, : w // 2] = (20, 40, 210)
    arr[h // 2:, w // 2:] = (240, 230, 20)
    return arr


def save(path: Path, img: Image.Image | np.ndarray, **kwargs) -> Path:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    img.save(path, **kwargs)
    return path


def decode(path: Path) -> np.ndarray:
    img = decode_image(path)
    arr = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8
    return arr


def mode_on_disk(path: Path) -> str:
    with Image.open(path) as img:
        return img.mode


def assert_close(actual: np.ndarray, expected, tol: float) -> None:
    diff = np.abs(actual.astype(int) - np.asarray(expected, int))
    assert diff.max() <= tol, f"max difference {diff.max()} > {tol}"


def decode_error(path: Path) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(path)
    assert info.value.path == str(path) and str(path) in str(info.value)
    return info.value


# --- formats ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext, kwargs, tol", [
    (".png", {}, 0),
    (".bmp", {}, 0),
    (".gif", {}, 0),  # four colours fit a palette exactly
    (".tif", {}, 0),
    (".tiff", {"compression": "tiff_lzw"}, 0),
    (".webp", {"lossless": True}, 0),
    (".ppm", {}, 0),
    (".jpg", {"quality": 95, "subsampling": 0}, 12),
], ids=["png", "bmp", "gif", "tif", "tiff-lzw", "webp-lossless", "ppm", "jpeg"])
def test_decodes_each_format_to_rgb_uint8(tmp_path, ext, kwargs, tol):
    src = blocks()
    out = decode(save(tmp_path / f"img{ext}", src, **kwargs))
    assert out.shape == src.shape
    assert_close(out, src, tol)


@pytest.mark.parametrize("ext, mode", [(".png", "L"), (".pgm", "L"), (".jpg", "L"), (".pbm", "1"),
                                       (".png", "1"), (".gif", "P")])
def test_greyscale_and_bilevel_come_out_as_equal_channels(tmp_path, ext, mode):
    grey = np.zeros((16, 24), np.uint8)
    grey[:, 12:] = 255  # black | white: survives 1-bit, palette and JPEG
    path = save(tmp_path / f"grey{ext}", Image.fromarray(grey).convert(mode))
    assert mode_on_disk(path) == mode
    out = decode(path)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert_close(out[..., 0], grey, 8 if ext == ".jpg" else 0)


def test_palette_png_uses_its_palette(tmp_path):
    src = blocks()
    path = save(tmp_path / "pal.png", Image.fromarray(src).quantize(4))
    assert mode_on_disk(path) == "P"
    assert_close(decode(path), src, 0)


# --- bit depths ---------------------------------------------------------------------------------------

GREY16 = np.array([[0, 257, 257 * 100, 32896], [257 * 200, 65278, 65535, 1000]], np.uint16)


def test_16bit_png_is_scaled_to_8bit_not_clipped(tmp_path):
    path = save(tmp_path / "g16.png", Image.fromarray(GREY16))
    assert mode_on_disk(path) in ("I;16", "I")
    out = decode(path)
    np.testing.assert_array_equal(out[..., 0], [[0, 1, 100, 128], [200, 254, 255, 4]])


def test_every_16bit_value_rounds_to_the_nearest_8bit_level(tmp_path):
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    out = decode(save(tmp_path / "all16.png", Image.fromarray(values)))
    np.testing.assert_array_equal(out[..., 0], np.round(values / 257.0).astype(np.uint8))


def test_16bit_pgm_is_scaled_to_8bit(tmp_path):
    path = tmp_path / "g16.pgm"
    path.write_bytes(b"P5\n4 2\n65535\n" + GREY16.astype(">u2").tobytes())
    out = decode(path)
    np.testing.assert_array_equal(out[..., 0], [[0, 1, 100, 128], [200, 254, 255, 4]])


def test_12bit_pgm_uses_its_maxval(tmp_path):
    path = tmp_path / "g12.pgm"
    path.write_bytes(b"P5\n3 1\n4095\n" + np.array([0, 2048, 4095], ">u2").tobytes())
    assert_close(decode(path)[0, :, 0], [0, 128, 255], 1)


def test_32bit_integer_tiff_is_scaled_by_its_range(tmp_path):
    top = 2**31 - 1
    path = save(tmp_path / "i32.tif", Image.fromarray(np.array([[0, top // 2, top]], np.int32)))
    assert mode_on_disk(path) == "I"
    assert_close(decode(path)[0, :, 0], [0, 128, 255], 1)


@pytest.mark.parametrize("values, expected", [([0.0, 0.5, 1.0], [0, 128, 255]),  # 0-1 floats
                                              ([0.0, 100.4, 300.0], [0, 100, 255])])  # 0-255 floats, clipped
def test_float_tiff_is_taken_as_0_1_or_0_255(tmp_path, values, expected):
    path = save(tmp_path / "f.tif", Image.fromarray(np.array([values], np.float32)))
    assert mode_on_disk(path) == "F"
    np.testing.assert_array_equal(decode(path)[0, :, 0], expected)


# --- colour modes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".jpg", ".tif"])
def test_cmyk_is_converted_to_rgb(tmp_path, ext):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red ink
    cmyk.paste((255, 0, 255, 0), (8, 0, 16, 16))  # cyan + yellow = green
    path = save(tmp_path / f"cmyk{ext}", cmyk, **({"quality": 95} if ext == ".jpg" else {}))
    assert mode_on_disk(path) == "CMYK"
    out = decode(path)
    assert_close(out[:, :8], (255, 0, 0), 6)
    assert_close(out[:, 8:], (0, 255, 0), 6)


def rgba_sample() -> np.ndarray:
    """Opaque red | half-transparent red | fully transparent black."""
    rgba = np.zeros((4, 12, 4), np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)
    rgba[:, 4:8] = (255, 0, 0, 128)
    rgba[:, 8:] = (0, 0, 0, 0)
    return rgba


@pytest.mark.parametrize("ext, kwargs", [(".png", {}), (".webp", {"lossless": True}), (".tif", {})])
def test_rgba_is_composited_onto_white(tmp_path, ext, kwargs):
    path = save(tmp_path / f"rgba{ext}", Image.fromarray(rgba_sample(), "RGBA"), **kwargs)
    assert mode_on_disk(path) == "RGBA"
    out = decode(path)
    assert_close(out[:, :4], (255, 0, 0), 0)
    assert_close(out[:, 4:8], (255, 127, 127), 1)  # alpha 128 over white
    assert_close(out[:, 8:], WHITE, 0)  # not the black hidden under alpha 0


def test_greyscale_with_alpha_is_composited_onto_white(tmp_path):
    la = Image.merge("LA", [Image.new("L", (8, 4), 0), Image.fromarray(np.repeat([[255, 0]], 4, 0)
                                                                         .repeat(4, 1).astype(np.uint8))])
    path = save(tmp_path / "la.png", la)
    assert mode_on_disk(path) == "LA"
    out = decode(path)
    assert_close(out[:, :4], (0, 0, 0), 0)
    assert_close(out[:, 4:], WHITE, 0)


def palette_with_transparent_index() -> Image.Image:
    img = Image.new("P", (8, 4), 0)
    img.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    img.paste(1, (0, 0, 4, 4))  # left half red, right half index 0 (black, transparent)
    return img


@pytest.mark.parametrize("ext", [".gif", ".png"])
def test_palette_with_transparent_colour_is_composited_onto_white(tmp_path, ext):
    path = save(tmp_path / f"pal{ext}", palette_with_transparent_index(), transparency=0)
    assert mode_on_disk(path) == "P"
    out = decode(path)
    assert_close(out[:, :4], (200, 30, 30), 0)
    assert_close(out[:, 4:], WHITE, 0)


@pytest.mark.parametrize("mode, key", [("RGB", (0, 0, 0)), ("L", 0)])
def test_colour_key_transparency_is_composited_onto_white(tmp_path, mode, key):
    img = Image.new(mode, (8, 4), key)
    img.paste((200, 30, 30) if mode == "RGB" else 90, (0, 0, 4, 4))
    path = save(tmp_path / f"key_{mode}.png", img, transparency=key)
    assert mode_on_disk(path) == mode
    out = decode(path)
    assert_close(out[:, :4], (200, 30, 30) if mode == "RGB" else (90, 90, 90), 0)
    assert_close(out[:, 4:], WHITE, 0)


# --- orientation and frames ---------------------------------------------------------------------------

_ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),  # the phone held upright: rotate 90 degrees clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(_ORIENT))
def test_exif_orientation_is_applied(tmp_path, orientation):
    src = blocks()
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode(save(tmp_path / "photo.jpg", src, exif=exif, quality=95, subsampling=0))
    expected = _ORIENT[orientation](src)
    assert out.shape == expected.shape
    assert_close(out, expected, 12)


def test_exif_orientation_6_puts_the_left_edge_on_top(tmp_path):
    src = np.full((16, 40, 3), (255, 0, 0), np.uint8)
    src[:, :8] = (0, 0, 255)  # blue strip on the left of a landscape sensor image
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode(save(tmp_path / "phone.jpg", src, exif=exif, quality=95, subsampling=0))
    assert out.shape == (40, 16, 3)  # portrait
    assert_close(out[:8].mean(axis=(0, 1)), (0, 0, 255), 12)
    assert_close(out[-8:].mean(axis=(0, 1)), (255, 0, 0), 12)


def frames() -> list[Image.Image]:
    return [Image.new("RGB", (8, 8), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]


@pytest.mark.parametrize("ext, kwargs", [(".gif", {}), (".tif", {}), (".webp", {"lossless": True})])
def test_multi_frame_files_give_their_first_frame(tmp_path, ext, kwargs):
    first, *rest = frames()
    path = tmp_path / f"anim{ext}"
    first.save(path, save_all=True, append_images=rest, **kwargs)
    with Image.open(path) as img:
        assert getattr(img, "n_frames", 1) == 3
    assert_close(decode(path), (200, 0, 0), 2)


# --- resize -------------------------------------------------------------------------------------------

def test_read_image_squashes_to_a_square(tmp_path):
    out = read_image(save(tmp_path / "wide.png", blocks(16, 32)), 24)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    assert_close(out[2, 2], (220, 30, 30), 0) and assert_close(out[-3, -3], (240, 230, 20), 0)


def test_read_image_keeps_pixels_exactly_at_native_size(tmp_path):
    src = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_image(save(tmp_path / "sq.png", src), 20), src)


def test_a_decoded_image_owns_its_pixels_even_when_the_file_changes(tmp_path):
    # Pillow memory-maps an uncompressed file opened by name; the decoded image must not follow it
    grey = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    path = save(tmp_path / "raw.pgm", grey)
    img = decode_image(path)
    path.write_bytes(path.read_bytes()[:-grey.size] + bytes(grey.size))  # same size, all black
    np.testing.assert_array_equal(np.asarray(img), grey)


# --- errors -------------------------------------------------------------------------------------------

def jpeg_bytes() -> bytes:
    from io import BytesIO

    buf = BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG")
    return buf.getvalue()


def png_bytes() -> bytes:
    from io import BytesIO

    buf = BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name, content, reason", [
    ("empty.jpg", lambda: b"", "empty"),
    ("half.jpg", lambda: jpeg_bytes()[: len(jpeg_bytes()) // 2], "truncated"),
    ("headeronly.jpg", lambda: jpeg_bytes()[:200], "truncated"),
    ("half.png", lambda: png_bytes()[: len(png_bytes()) // 2], "truncated"),
    ("early.png", lambda: png_bytes()[:60], "truncated"),
    ("noise.jpg", lambda: np.random.default_rng(2).bytes(2000), "not a recognised image format"),
    ("notes.png", lambda: b"these are my notes, not a picture\n" * 20, "not a recognised image format"),
])
def test_broken_file_gives_a_specific_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content())
    assert reason in decode_error(path).reason


def test_missing_file_and_folder_are_decode_errors(tmp_path):
    assert "cannot read file" in decode_error(tmp_path / "gone.jpg").reason
    (tmp_path / "folder.jpg").mkdir()
    assert decode_error(tmp_path / "folder.jpg").reason == "not a regular file (a folder)"


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height", [(25_000, 20_000), (40_000, 40_000)])
def test_decompression_bomb_beyond_400_megapixels_is_refused_before_decoding(tmp_path, width, height):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(width, height))
    assert "too large" in decode_error(path).reason


def test_decode_error_is_a_featcache_error():
    assert issubclass(ImageDecodeError, FeatcacheError)


# --- file collection ----------------------------------------------------------------------------------

def test_image_extensions_are_case_insensitive():
    assert all(is_image_path(f"x{e}") for e in (".JPG", ".Jpeg", ".png", ".PGM", ".webp", ".TIFF"))
    assert not any(is_image_path(f"x{e}") for e in (".txt", ".json", ".h5", ""))


def test_collect_walks_folders_skips_hidden_and_keeps_named_files(tmp_path):
    for rel in ("a/1.jpg", "a/b/2.PNG", "a/notes.txt", "a/.hidden.jpg", "a/.cache/3.jpg", "c/odd.dat"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = collect_image_files([tmp_path / "a", tmp_path / "c" / "odd.dat"])
    assert found == [tmp_path / "a/1.jpg", tmp_path / "a/b/2.PNG", tmp_path / "c/odd.dat"]
    with pytest.raises(FeatcacheError, match="does not exist"):
        collect_image_files([tmp_path / "nowhere"])


def test_decodes_real_orl_pgm_photos(orl_dir):
    paths = sorted(Path(orl_dir, "s1").glob("*.pgm"))
    assert len(paths) == 10
    for path in paths:
        out = decode(path)
        assert out.shape == (112, 92, 3)
        assert (out[..., 0] == out[..., 2]).all() and out.std() > 10  # greyscale, and a real photo
