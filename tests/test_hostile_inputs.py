"""Hostile and careless input on the ingest side: special files named like images, broken and
looping symbolic links, names that are not UTF-8, and decompression bombs. All real files on disk."""

from __future__ import annotations

import os
import resource
import signal
import socket
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, make_image, make_tree
from PIL import Image

from featcache.errors import FeatcacheError, ImageDecodeError, ParameterError
from featcache.extraction import ExtractOptions, extract
from featcache.ingest.decode import DECODE_BUDGET_BYTES, collect_image_files, decode_image, iter_image_batches
from featcache.ingest.scan import SkippedImage, scan
from featcache.stores import open_store


@contextmanager
def deadline(seconds: float):
    """Fail instead of hanging: opening a FIFO blocks until a writer comes, and SIGALRM interrupts that."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: blocked opening a FIFO?")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_socket(path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(path.parent)  # a relative name: AF_UNIX paths are limited to 107 bytes
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(path.name)  # the socket file stays after close
    finally:
        os.chdir(cwd)


def make_broken_link(path: Path) -> None:
    path.symlink_to(path.parent / "gone.jpg")


def make_self_loop(path: Path) -> None:
    path.symlink_to(path)


def make_two_link_loop(path: Path) -> None:
    other = path.with_name("other.png")
    other.symlink_to(path)
    path.symlink_to(other)


# (maker, the name it makes, words its reason must hold)
SPECIAL = {
    "fifo": (make_fifo, "pipe.jpg", "not a regular file (a FIFO"),
    "socket": (make_socket, "sock.png", "not a regular file (a socket)"),
    "broken-link": (make_broken_link, "dangling.jpg", "broken symbolic link"),
    "self-loop": (make_self_loop, "self.jpg", "symbolic link loop"),
    "two-link-loop": (make_two_link_loop, "loop.jpg", "symbolic link loop"),
}


def with_special_files(folder: Path) -> dict[str, str]:
    """Every special file of SPECIAL in folder: {name: words of its reason}."""
    folder.mkdir(parents=True, exist_ok=True)
    for maker, name, _ in SPECIAL.values():
        maker(folder / name)
    return {name: words for _, name, words in SPECIAL.values()}


def non_utf8(folder: Path, name: bytes) -> bytes:
    """The bytes path of `name` in folder: str paths cannot spell a name that is not UTF-8."""
    return os.path.join(os.fsencode(folder), name)


def reasons(skips: list[SkippedImage]) -> dict[str, str]:
    return {s.path: s.reason for s in skips}


# --- scan ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(SPECIAL))
def test_scan_skips_a_special_file_named_like_an_image_without_opening_it(tmp_path, kind):
    root = make_tree(tmp_path / "data", per_class=2)
    maker, name, words = SPECIAL[kind]
    maker(root / "red" / name)
    with deadline(10):
        m = scan(root)
    assert f"red/{name}" not in m.paths and len(m) == 6
    skipped = reasons(m.unreadable)
    assert words in skipped[f"red/{name}"]
    assert all(isinstance(s, SkippedImage) for s in m.unreadable)
    assert m.classes == ["blue", "green", "red"] and not m.empty_classes


def test_scan_skips_non_utf8_names_and_shows_them_printable(tmp_path):
    root = make_tree(tmp_path / "data", per_class=2)
    Path(os.fsdecode(non_utf8(root / "red", b"caf\xe9.jpg"))).write_bytes(b"latin-1 name")
    Path(os.fsdecode(non_utf8(root / "red", b"notes\xff.txt"))).write_text("not an image")
    os.mkdir(non_utf8(root, b"gr\xfcn"))  # a class folder whose name is not UTF-8
    make_image(Path(os.fsdecode(non_utf8(root, b"gr\xfcn"))) / "a.png", (1, 2, 3), seed=0)
    m = scan(root)
    assert len(m) == 6 and m.classes == ["blue", "green", "red"]
    skipped = reasons(m.unreadable)
    assert set(skipped) == {"red/caf\\xe9.jpg", "gr\\xfcn/a.png"}
    assert all("not valid UTF-8" in r for r in skipped.values())
    assert "red/notes\\xff.txt" in m.ignored
    assert m.empty_classes == ["gr\\xfcn"]
    for text in [*skipped, *m.ignored, *m.empty_classes, *m.paths, *m.classes]:
        text.encode("utf-8")  # printable and storable: no surrogate escapes left


def test_a_class_whose_only_image_is_unreadable_is_an_empty_class(tmp_path):
    root = make_tree(tmp_path / "data", per_class=2)
    (root / "owls").mkdir()
    make_fifo(root / "owls" / "owl.jpg")
    with deadline(10):
        m = scan(root)
    assert "owls" not in m.classes and m.empty_classes == ["owls"]
    assert list(reasons(m.unreadable)) == ["owls/owl.jpg"]


def test_a_folder_of_only_unreadable_images_says_why_nothing_was_found(tmp_path):
    root = tmp_path / "data"
    with_special_files(root / "cats")
    with deadline(10), pytest.raises(FeatcacheError) as info:
        scan(root)
    message = str(info.value)
    assert "no images found" in message and "image files cannot be read" in message


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_extract_finishes_past_special_files_and_non_utf8_names(tmp_path, suffix):
    root = make_tree(tmp_path / "data", per_class=2)
    special = with_special_files(root / "red")
    Path(os.fsdecode(non_utf8(root / "blue", b"\xff\xfe.png"))).write_bytes(b"not UTF-8")
    Path(os.fsdecode(non_utf8(root / "blue", b"readme\xe9.txt"))).write_text("ignored")
    store = tmp_path / f"features{suffix}"
    with deadline(60):
        result = extract(root, store, ExtractOptions(backbones=[TINY], weights="random", progress=False))
    assert result.images == 6 and not result.complete  # extract reports them (the CLI exits 1)
    skipped = {s.path for s in result.skipped}  # (a two-link loop is two skipped names)
    assert {f"red/{n}" for n in special} | {"blue/\\xff\\xfe.png"} <= skipped
    with open_store(store) as st:
        stored = st.manifest()
    assert sorted(stored.paths) == sorted(str(p.relative_to(root)) for p in root.rglob("*_00?.*"))
    assert "blue/readme\\xe9.txt" in stored.ignored


# --- collect_image_files and decode_image (predict, classify) -----------------------------------------

def test_collect_keeps_special_files_so_each_is_reported(tmp_path):
    folder = tmp_path / "photos"
    expected = with_special_files(folder)
    make_image(folder / "good.png", (10, 200, 30), seed=0)
    found = collect_image_files([folder])
    assert sorted(p.name for p in found) == sorted([*expected, "good.png", "other.png"])
    with deadline(10):
        (batch,) = iter_image_batches(found, [16], batch_size=len(found))
    by_name = {batch.paths[i].name: reason for i, reason in batch.errors.items()}
    assert [batch.paths[i].name for i in batch.decoded] == ["good.png"]
    for name, words in expected.items():
        assert words in by_name[name], (name, by_name[name])


@pytest.mark.parametrize("kind", ["fifo", "broken-link", "self-loop"])
def test_a_named_special_file_is_kept_and_decode_says_what_it_is(tmp_path, kind):
    maker, name, words = SPECIAL[kind]
    maker(tmp_path / name)
    assert collect_image_files([tmp_path / name]) == [tmp_path / name]
    with deadline(10), pytest.raises(ImageDecodeError) as info:
        decode_image(tmp_path / name)
    assert words in info.value.reason and str(tmp_path / name) in str(info.value)


def test_decode_refuses_a_device_without_opening_it():
    with deadline(10), pytest.raises(ImageDecodeError, match=r"not a regular file \(a character device\)"):
        decode_image("/dev/zero")  # opening would work; reading it would never end


# --- decompression bombs ------------------------------------------------------------------------------

def zero_png(path: Path, width: int, height: int, bit_depth: int = 16) -> Path:
    """A valid all-black greyscale PNG of any size, in milliseconds: a band of zero rows is compressed
    once, full-flushed (so each copy decodes on its own), and the copy repeated."""
    row = bytes(1 + width * bit_depth // 8)  # filter byte 0, then zero samples
    band = min(height, 64)

    def deflate(data: bytes, flush: int) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the zlib wrapper is added below
        return c.compress(data) + c.flush(flush)

    repeats, rest = divmod(height, band)
    body = deflate(row * band, zlib.Z_FULL_FLUSH) * repeats + deflate(row * rest, zlib.Z_FINISH)
    check = 1
    for _ in range(repeats):
        check = zlib.adler32(row * band, check)
    idat = b"\x78\xda" + body + struct.pack(">I", zlib.adler32(row * rest, check))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_the_bomb_writer_makes_real_pngs(tmp_path):
    img = decode_image(zero_png(tmp_path / "small.png", 300, 130))
    assert img.size == (300, 130) and not np.asarray(img).any()


def test_a_16bit_png_bomb_is_refused_from_its_header(tmp_path):
    bomb = zero_png(tmp_path / "bomb.png", 19_000, 19_000)  # 689 MiB of pixels, 6 GB to decode before
    assert bomb.stat().st_size < 1_000_000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageDecodeError) as info:
        decode_image(bomb)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    reason = info.value.reason
    assert "too large" in reason and "19000x19000" in reason and "I;16" in reason
    assert "688.6 MiB" in reason and f"{DECODE_BUDGET_BYTES / 2**20:,.1f} MiB allowed" in reason
    assert grown_mib < 100


@pytest.mark.parametrize("mode, per_pixel", [("L", 1), ("I;16", 2), ("RGB", 4), ("P", 4), ("RGBA", 4)],
                         ids=["grey", "16-bit", "rgb-padded-to-4", "palette-becomes-rgb", "rgba"])
def test_the_budget_counts_the_memory_a_pixel_takes(tmp_path, mode, per_pixel):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (48, 64), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).convert(mode)
    img.save(path := tmp_path / "img.png")
    need = 64 * 48 * per_pixel
    assert decode_image(path, max_bytes=need).size == (64, 48)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(path, max_bytes=need - 1)
    assert "64x48" in info.value.reason and "more than the" in info.value.reason


@pytest.mark.parametrize("value", [0, -1])
def test_the_budget_must_be_positive(tmp_path, value):
    with pytest.raises(ParameterError, match="max_bytes"):
        decode_image(make_image(tmp_path / "a.png", (1, 2, 3), seed=0), max_bytes=value)



def test_predict_names_a_non_utf8_file_printably(tmp_path):
    """predict walks folders itself: a photo whose name is not UTF-8 is predicted, and its record's
    path prints and serialises as JSON (\\xNN escapes), as does an error record of such a name."""
    import json

    from click.testing import CliRunner

    from featcache.cli import cli
    from featcache.train.fit import fit_head

    data = make_tree(tmp_path / "data", per_class=4)
    store = tmp_path / "s.zarr"
    extract(data, store, ExtractOptions(backbones=[TINY], weights="random", progress=False))
    fit_head(store, [TINY], "logreg", tmp_path / "run", progress=False)
    queries = tmp_path / "queries"
    queries.mkdir()
    make_image(Path(os.fsdecode(non_utf8(queries, b"caf\xe9.png"))), (200, 40, 40), seed=1)
    Path(os.fsdecode(non_utf8(queries, b"bad\xff.png"))).write_bytes(b"not a png")
    r = CliRunner().invoke(cli, ["predict", str(tmp_path / "run"), str(queries), "--json", "-q"])
    assert r.exit_code == 1, r.output  # the broken one
    records = {Path(rec["path"]).name: rec for rec in json.loads(r.stdout)}
    assert records["caf\\xe9.png"]["label"] in ("red", "green", "blue")
    assert records["bad\\xff.png"]["error"] and records["bad\\xff.png"]["label"] is None


# --- options that would silently mean something else, or unbounded work (issue 21, findings 7 and 8) ----------

def test_augmented_views_are_capped_with_the_reason():
    from featcache.ingest.augment import MAX_AUGMENTED_VIEWS, AugmentParams

    ExtractOptions(backbones=[TINY], augment=AugmentParams(augmented_views=MAX_AUGMENTED_VIEWS))
    with pytest.raises(ParameterError, match="forward pass") as info:  # was accepted, and ran for minutes
        ExtractOptions(backbones=[TINY], augment=AugmentParams(augmented_views=10000))
    assert info.value.param == "augmented_views" and str(MAX_AUGMENTED_VIEWS) in str(info.value)
    assert AugmentParams.from_dict({"augmented_views": 100}).views == 101, "a record made before the cap reads"


@pytest.mark.parametrize("size", [0, -1])
def test_an_image_size_of_zero_is_refused_not_taken_as_the_default(size):
    with pytest.raises(ParameterError, match="input sizes from") as info:
        ExtractOptions(backbones=[TINY], image_size=size, weights="random").feature_configs()
    assert info.value.param == "image_size"


def test_extract_cli_words_the_caps_as_flags(tmp_path):
    from conftest import extract_cli

    for args, flag in ((("--augment", "10000"), "--augment"), (("--image-size", "0"), "--image-size"),
                       (("--split", "90/20/10"), "--split")):
        result = extract_cli(tmp_path, *args)
        assert result.exit_code == 2 and flag in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "s.zarr").exists()
