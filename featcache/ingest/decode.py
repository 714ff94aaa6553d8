"""Image decoding shared by extract, predict and classify: one code path, so features match.

Every file becomes an RGB uint8 array. Modes are normalised as follows:
- EXIF orientation is applied (a phone photo comes out upright).
- Greyscale (L, 1), palette (P) and CMYK are converted to RGB.
- 16-bit and 32-bit integer images (I;16, I) are scaled to 0-255 by their bit depth; float (F)
  images are taken as 0-1 when their maximum is at most 1, else clipped to 0-255.
- Transparency (RGBA, LA, PA, and P, L or RGB with a transparent colour key) is composited onto a
  WHITE background, so a transparent logo looks as it does in a browser.
- Animated GIF/WebP/multi-page TIFF: the first frame.

Refused with an ImageDecodeError saying why (extraction skips the file and records the reason):
- Anything but a regular file: a FIFO, socket, device or folder, a broken or looping symbolic link.
  This is judged from ``os.stat`` alone, before the file is opened, so a FIFO cannot block a reader.
- Empty, truncated or corrupt files, and formats Pillow does not know.
- Decompression bombs: an image whose pixels would take more than ``DECODE_BUDGET_BYTES`` (512 MiB)
  in memory, judged from its header before any pixel is decoded (a 741 KB PNG can declare
  19000 x 19000 16-bit pixels: 689 MiB). Counted: width x height x the bytes Pillow holds a pixel
  in, 1 for bilevel and greyscale, 2 for 16-bit, 4 for the rest (RGB is padded to 4 bytes, and a
  palette or transparent image becomes RGB). That admits RGB photos up to 134 Mpx. Normalising
  briefly holds more than the decoded pixels: nothing more for RGB and greyscale, up to 2 times for
  CMYK, 4 times for 16- and 32-bit images and 5 times for images with transparency (measured,
  Pillow 13). ``extract`` decodes on up to 4 threads by default (``workers``): at most 4 x 512 MiB
  = 2 GiB of decoded pixels at once, 10 GiB in the worst case of four maximal transparent images
  converting together; more workers raise both in proportion.
  JPEG draft mode (decoding at 1/2, 1/4 or 1/8 scale) is not used: it changes the pixels (by up to
  5 levels at 224 px from 2x the size), and a file would no longer decode the same for every input
  size a run may need.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import FeatcacheError, ImageDecodeError, ParameterError
from ..paths import printable_path
from .sources import is_url, read_location

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .bmp .gif .tif .tiff .webp .pgm .ppm .pbm .pnm".split()
)
BACKGROUND = (255, 255, 255)
DECODE_BUDGET_BYTES = 512 * 2**20  # decoded pixels per image; see the module docstring

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not silently grey pixels
# Pillow only warns between MAX_IMAGE_PIXELS and twice that, and raises DecompressionBombError beyond:
# refuse decompression bombs beyond 400 Mpx (the byte budget above refuses most before that).
Image.MAX_IMAGE_PIXELS = 200_000_000

# round(v / 257) for every 16-bit value v: the 16-bit range onto 8 bits, 1 byte a pixel of
# working memory (float arithmetic took 16). 2v + 257 is odd, so there are no ties to round.
_SCALE16 = ((np.arange(65536, dtype=np.uint32) * 2 + 257) // 514).astype(np.uint8)
_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_utf8_path(path: str | os.PathLike) -> bool:
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes: the name on disk is not UTF-8
        return False
    return True


def check_regular_file(path: str | Path) -> os.stat_result:
    """``os.stat`` of a regular file (symbolic links followed), or ImageDecodeError saying what the
    path is instead. Never opens the path: opening a FIFO would block until someone writes to it."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageDecodeError(path, "symbolic link loop (the link leads back to itself)") from exc
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise ImageDecodeError(path, f"broken symbolic link (its target "
                                         f"{printable_path(os.readlink(path))} does not exist)") from exc
        raise ImageDecodeError(path, f"cannot read file ({exc.strerror})") from exc
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for is_kind, k in _FILE_KINDS if is_kind(st.st_mode)), "a special file")
        raise ImageDecodeError(path, f"not a regular file ({kind})")
    return st


def _decoded_bytes(img: Image.Image) -> int:
    """Memory the decoded image takes, or the image it normalises to if that is larger."""
    if img.mode in ("1", "L") and "transparency" not in img.info:
        per_pixel = 1
    elif img.mode.startswith("I;16"):
        per_pixel = 2
    else:
        per_pixel = 4
    return img.width * img.height * per_pixel


def _to_grey(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float pixels -> 8-bit greyscale, operating in place where it can."""
    arr = np.array(img)  # a writable copy
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.size and arr.max() <= 65535):
        if img.mode == "I":
            np.clip(arr, 0, 65535, out=arr)
        return Image.fromarray(_SCALE16[arr], "L")
    if img.mode == "F":
        if arr.size and np.nanmax(arr) <= 1.0:
            arr *= 255.0
        np.nan_to_num(arr, copy=False)
    else:
        arr = arr.astype(np.float64)
        arr *= 255.0 / (2**31 - 1)  # signed 32-bit range onto 8-bit
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(np.rint(arr, out=arr).astype(np.uint8), "L")


def _normalise(img: Image.Image) -> Image.Image:
    """Any decoded image -> mode RGB, or L when it is plain greyscale (same pixels once expanded to
    RGB, and three times cheaper to resize: ORL-style greyscale sets decode 2.5x faster)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _to_grey(img)
    if mode in ("P", "L", "1", "RGB") and "transparency" in img.info:  # a transparent colour key
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img if mode == "RGBA" else img.convert("RGBA")
        background = Image.new("RGBA", img.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, img).convert("RGB")
    if mode == "1":
        return img.convert("L")
    if mode not in ("RGB", "L"):
        return img.convert("RGB")
    return img


def _open(path: str | Path, data: bytes | None = None):
    """A file object of the image's bytes: ``data`` when given (already read), a local file, or an
    object of a URL data root (sources.py: read whole, retried on transient errors, a permanent
    failure an ImageDecodeError)."""
    if data is not None or is_url(path):
        data = read_location(path) if data is None else data
        if not data:
            raise ImageDecodeError(path, "file is empty (0 bytes)")
        return io.BytesIO(data)
    path = Path(path)
    if check_regular_file(path).st_size == 0:
        raise ImageDecodeError(path, "file is empty (0 bytes)")
    # A file object, not the path: Pillow would memory-map an uncompressed file, and the image
    # handed back must own its pixels, not alias a file that may change under it.
    try:
        return path.open("rb")
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot read file ({exc.strerror})") from exc


def decode_image(path: str | Path, max_bytes: int = DECODE_BUDGET_BYTES, draft: int | None = None,
                 data: bytes | None = None) -> Image.Image:
    """Decode a file to an upright image in mode RGB or L (greyscale), or raise ImageDecodeError.
    ``max_bytes``: the most its decoded pixels may take (see the module docstring). ``draft``: a
    JPEG at least twice that size on both sides is decoded at 1/2, 1/4 or 1/8 scale, still at
    least ``draft`` pixels a side (libjpeg's DCT scaling: much faster, slightly other pixels)."""
    if max_bytes <= 0:
        raise ParameterError("max_bytes", f"must be a positive number of bytes, not {max_bytes}")
    f = _open(path, data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF warnings on odd camera files are noise here
            with f, Image.open(f) as img:
                img.seek(0)
                if draft and img.format == "JPEG":
                    img.draft(None, (draft, draft))
                if (need := _decoded_bytes(img)) > max_bytes:
                    raise ImageDecodeError(path, f"image too large: {img.width}x{img.height} pixels in mode "
                                                 f"{img.mode} decode to {_mib(need)}, more than the "
                                                 f"{_mib(max_bytes)} allowed per image")
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an upright image
                return _normalise(img)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, "not a recognised image format (corrupt or not an image)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(path, f"image too large ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc)
        if "truncated" in msg.lower() or isinstance(exc, EOFError):
            raise ImageDecodeError(path, f"image data is truncated ({msg})") from exc
        raise ImageDecodeError(path, f"corrupt image data ({msg})") from exc


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def resize(img: Image.Image, size: int) -> np.ndarray:
    """Squash to (size, size, 3) uint8 RGB with bilinear filtering (as Keras'
    image_dataset_from_directory does); a greyscale image is expanded to RGB after resizing."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def read_image(path: str | Path, size: int, jpeg_draft: bool = False, data: bytes | None = None) -> np.ndarray:
    """Decode + orient + resize: (size, size, 3) uint8 RGB. ``jpeg_draft``: see decode_image's draft.
    ``data``: the file's bytes, already read."""
    return resize(decode_image(path, draft=size if jpeg_draft else None, data=data), size)


def collect_image_files(inputs) -> list[Path]:
    """Files and folders (walked recursively, sorted) -> image file paths. A named file is always
    kept, whatever its extension, and so are image names in a folder that are not regular files
    (FIFOs, broken or looping symbolic links): each is reported by decode_image, not dropped."""

    out: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if is_image_path(f) and not f.is_dir()
                              and not any(part.startswith(".") for part in f.relative_to(p).parts)))
        elif os.path.lexists(p):  # a broken or looping link is still a name the user gave
            out.append(p)
        else:
            raise FeatcacheError(f"{printable_path(p)} does not exist")
    return out


@dataclass
class DecodedBatch:
    paths: list[Path]  # every file of the batch, in order
    errors: dict[int, str]  # position in paths -> why that file could not be decoded
    images: list[np.ndarray]  # one (n_decoded, S, S, 3) uint8 array per requested size

    @property
    def decoded(self) -> list[int]:
        """Positions in paths of the files in images, in order."""
        return [i for i in range(len(self.paths)) if i not in self.errors]


def iter_image_batches(files: Sequence[Path], sizes: Sequence[int], batch_size: int) -> Iterator[DecodedBatch]:
    """Files in batches: each decoded once and resized to every size; unreadable ones reported."""
    for start in range(0, len(files), batch_size):
        paths = list(files[start:start + batch_size])
        errors: dict[int, str] = {}
        per_size: list[list[np.ndarray]] = [[] for _ in sizes]
        for i, path in enumerate(paths):
            try:
                img = decode_image(path)
            except ImageDecodeError as exc:
                errors[i] = exc.reason
                continue
            for arrays, size in zip(per_size, sizes, strict=True):
                arrays.append(resize(img, size))
        images = [np.stack(a) if a else np.zeros((0, s, s, 3), np.uint8) for a, s in zip(per_size, sizes, strict=True)]
        yield DecodedBatch(paths, errors, images)
