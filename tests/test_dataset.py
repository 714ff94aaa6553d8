"""Scanning a data folder: both layouts, the content-digest split, what is ignored, and the user's mistakes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from featcache.errors import FeatcacheError
from featcache.ingest.scan import SplitFractions, content_digest, scan, split_from_digest


def put(root: Path, *rels: str, content: bytes | None = None) -> Path:
    """Create files under root; each gets distinct bytes (its path) unless content is given."""
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode() if content is None else content)
    return root


def many(root: Path, n: int, classes=("a", "b", "c"), tag: str = "") -> Path:
    return put(root, *(f"{classes[i % len(classes)]}/img{tag}{i:04d}.jpg" for i in range(n)))


def split_of(manifest, rel: str) -> int:
    return int(manifest.splits[manifest.paths.index(rel)])


def split_by_digest(manifest) -> dict[str, int]:
    return dict(zip(manifest.digests, manifest.splits.tolist(), strict=True))


def scan_error(path) -> str:
    with pytest.raises(FeatcacheError) as info:
        scan(path)
    return str(info.value)


# --- split fractions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("70/20/10", (0.7, 0.2, 0.1)),
    ("0.8/0.1/0.1", (0.8, 0.1, 0.1)),
    ("80,10,10", (0.8, 0.1, 0.1)),
    ("50/50/0", (0.5, 0.5, 0.0)),
    ("33.3/33.3/33.4", (0.333, 0.333, 0.334)),
])
def test_split_fractions_parse_and_normalise(text, expected):
    f = SplitFractions.parse(text)
    np.testing.assert_allclose((f.train, f.validation, f.test), expected)


@pytest.mark.parametrize("text", ["", "70/30", "70/20/10/5", "a/b/c", "-10/60/50", "0/50/50", "0/0/0",
                                  "nan/1/1", "inf/1/1", "70/nan/10"])
def test_bad_split_strings_are_refused_with_an_example(text):
    with pytest.raises(FeatcacheError, match="70/20/10"):
        SplitFractions.parse(text)


@pytest.mark.parametrize("text", ["90/20/10", "7/2/1", "1/1/0", "0.5/0.2/0.1"])
def test_fractions_that_do_not_sum_to_100_or_1_are_refused_not_rescaled(text):
    """Issue 21 finding 8: 90/20/10 was silently rescaled to 75/16.7/8.3."""
    with pytest.raises(FeatcacheError, match="sum to .*100.*1") as info:
        SplitFractions.parse(text)
    assert text in str(info.value)


def test_split_fractions_print_as_percentages():
    assert str(SplitFractions()) == "70/20/10"
    assert str(SplitFractions.parse("0.8/0.1/0.1")) == "80/10/10"


def test_split_from_digest_follows_the_fractions():
    f = SplitFractions.parse("70/20/10")
    assert split_from_digest("0" * 32, f) == 0
    assert split_from_digest("b" + "0" * 31, f) == 0  # 0.6875
    assert split_from_digest("c" + "0" * 31, f) == 1  # 0.75
    assert split_from_digest("f" * 32, f) == 2
    assert split_from_digest("f" * 32, SplitFractions.parse("70/30/0")) == 1  # an empty split stays empty
    assert split_from_digest("f" * 32, SplitFractions.parse("100/0/0")) == 0


# --- class-per-folder layout --------------------------------------------------------------------------

def test_class_per_folder_layout(tmp_path):
    root = put(tmp_path / "data", "cats/b.jpg", "cats/a.PNG", "dogs/x.jpeg", "dogs/sub/y.bmp", "zebras/z.pgm")
    m = scan(root)
    assert not m.presplit
    assert m.classes == ["cats", "dogs", "zebras"]
    assert m.paths == ["cats/a.PNG", "cats/b.jpg", "dogs/sub/y.bmp", "dogs/x.jpeg", "zebras/z.pgm"]
    assert m.labels.tolist() == [0, 0, 1, 1, 2] and m.labels.dtype == np.int32
    assert m.splits.dtype == np.int8 and set(m.splits.tolist()) <= {0, 1, 2}
    assert m.root == str(root.resolve()) and m.abspath(0) == root.resolve() / "cats/a.PNG"
    assert m.digests[0] == content_digest(root / "cats/a.PNG") == hashlib.blake2b(
        b"cats/a.PNG", digest_size=16).hexdigest()
    assert sum(sum(c.values()) for c in m.counts().values()) == len(m) == 5


def test_fractions_given_as_a_string(tmp_path):
    m = scan(many(tmp_path, 60), "0.5/0.5/0")
    assert m.split_fractions == SplitFractions(0.5, 0.5, 0.0)
    assert 2 not in m.splits.tolist()


def test_split_roughly_matches_the_fractions(tmp_path):
    m = scan(many(tmp_path, 300))
    counts = np.bincount(m.splits, minlength=3)
    for n, expected in zip(counts, (210, 60, 30), strict=True):
        assert abs(n - expected) <= 4 * np.sqrt(300 * expected / 300 * (1 - expected / 300))
    per_class = m.counts()
    assert all(c["train"] > c["validation"] > 0 and c["test"] > 0 for c in per_class.values())


def test_split_is_decided_by_content(tmp_path):
    same = b"the very same photo"
    root = put(tmp_path, "cats/one.jpg", "dogs/deep/other_name.png", "birds/x.jpg", content=same)
    many(root, 60)
    m = scan(root)
    assert len({split_of(m, p) for p in ("cats/one.jpg", "dogs/deep/other_name.png", "birds/x.jpg")}) == 1
    for other in (SplitFractions.parse("50/25/25"), SplitFractions.parse("10/10/80")):
        m2 = scan(root, other)
        assert len({split_of(m2, p) for p in ("cats/one.jpg", "dogs/deep/other_name.png")}) == 1


def test_renaming_or_moving_a_file_keeps_its_split(tmp_path):
    root = many(tmp_path, 60)
    before = scan(root)
    for i, rel in enumerate(before.paths[:20]):
        target = root / ("c" if i % 2 else "a") / f"renamed_{i}.jpeg"
        (root / rel).rename(target)
    after = scan(root)
    assert after.paths != before.paths
    assert split_by_digest(after) == split_by_digest(before)


def test_adding_files_does_not_change_existing_splits(tmp_path):
    root = many(tmp_path, 90)
    before = split_by_digest(scan(root))
    many(root, 120, classes=("a", "b", "c", "d"), tag="new")
    after = split_by_digest(scan(root))
    assert len(after) == 210
    assert {d: after[d] for d in before} == before


# --- pre-split layout ---------------------------------------------------------------------------------

@pytest.mark.parametrize("names", [("train", "validation", "test"), ("train", "val", "test"),
                                   ("Train", "Valid", "Test"), ("training", "validation", "testing")])
def test_presplit_layout_keeps_its_split(tmp_path, names):
    tr, va, te = names
    files = [f"{tr}/cats/{i}.jpg" for i in range(20)] + [f"{tr}/dogs/{i}.jpg" for i in range(20)]
    files += [f"{va}/cats/v.jpg", f"{va}/dogs/v.jpg", f"{te}/cats/t.jpg", f"{te}/owls/t.jpg"]
    m = scan(put(tmp_path, *files))
    assert m.presplit
    assert m.classes == ["cats", "dogs", "owls"]
    by_path = dict(zip(m.paths, m.splits.tolist(), strict=True))
    assert all(by_path[p] == 0 for p in files[:40])  # all of train stays train, whatever the digests say
    assert [by_path[p] for p in files[40:]] == [1, 1, 2, 2]
    assert m.counts()["owls"] == {"train": 0, "validation": 0, "test": 1}
    assert m.labels[m.paths.index(f"{te}/owls/t.jpg")] == 2


def test_presplit_train_and_test_only(tmp_path):
    m = scan(put(tmp_path, "train/a/1.jpg", "train/b/2.jpg", "test/a/3.jpg"))
    assert m.presplit and m.splits.tolist() == [2, 0, 0]


def test_a_split_folder_beside_class_folders_is_refused_naming_both(tmp_path):
    """Issue 21 finding 8: train/ beside cats/ used to make "train" a class, silently."""
    with pytest.raises(FeatcacheError) as info:
        scan(put(tmp_path, "train/dogs/1.jpg", "cats/2.jpg"))
    message = str(info.value)
    assert "train beside cats" in message and "split" in message and "class" in message


# --- what is skipped ----------------------------------------------------------------------------------

def test_hidden_and_non_image_files_are_skipped(tmp_path):
    root = put(tmp_path, "cats/a.jpg", "cats/.DS_Store", "cats/._a.jpg", "cats/.thumbs/t.jpg", ".trash/cats/b.jpg",
               "cats/notes.txt", "dogs/labels.csv", "dogs/b.png", "dogs/model.h5")
    m = scan(root)
    assert m.paths == ["cats/a.jpg", "dogs/b.png"]
    assert m.classes == ["cats", "dogs"]
    assert sorted(m.ignored) == ["cats/notes.txt", "dogs/labels.csv", "dogs/model.h5"]


def test_stray_images_beside_class_folders_are_listed_as_ignored(tmp_path):
    m = scan(put(tmp_path, "cats/a.jpg", "loose.jpg", "train_readme.txt"))
    assert m.paths == ["cats/a.jpg"]
    assert "loose.jpg" in m.ignored


def test_stray_images_in_split_folders_are_listed_as_ignored(tmp_path):
    m = scan(put(tmp_path, "train/cats/a.jpg", "train/loose.jpg", "test/cats/b.jpg"))
    assert m.paths == ["test/cats/b.jpg", "train/cats/a.jpg"]
    assert "train/loose.jpg" in m.ignored


def test_empty_class_folders_are_listed_not_made_classes(tmp_path):
    root = put(tmp_path, "cats/a.jpg", "birds/notes.txt", "fish/.hidden.jpg")
    (root / "dogs").mkdir()
    m = scan(root)
    assert m.classes == ["cats"] and m.paths == ["cats/a.jpg"]
    assert m.empty_classes == ["birds", "dogs", "fish"]


def test_a_class_empty_in_one_split_only_is_not_an_empty_class(tmp_path):
    root = put(tmp_path, "train/cats/a.jpg", "train/dogs/b.jpg", "test/cats/c.jpg")
    for empty in ("test/dogs", "test/owls", "validation/owls"):
        (root / empty).mkdir(parents=True)
    m = scan(root)
    assert m.presplit and m.classes == ["cats", "dogs"]
    assert m.empty_classes == ["owls"]


def test_nothing_to_report_leaves_the_new_lists_empty(tmp_path):
    m = scan(many(tmp_path, 6))
    assert m.unreadable == [] and m.empty_classes == []


def test_symlinked_folders_are_followed_but_loops_end(tmp_path):
    outside = put(tmp_path / "elsewhere", "x.jpg", "y.jpg")
    root = put(tmp_path / "data", "cats/a.jpg")
    (root / "dogs").symlink_to(outside, target_is_directory=True)
    (root / "cats" / "loop").symlink_to(root / "cats", target_is_directory=True)
    (root / "cats" / "up").symlink_to(root, target_is_directory=True)
    m = scan(root)
    assert m.classes == ["cats", "dogs"]
    assert m.paths.count("cats/a.jpg") == 1 and "dogs/x.jpg" in m.paths
    assert len(set(m.digests)) == len(m.digests) == 3


# --- errors -------------------------------------------------------------------------------------------

def test_missing_folder(tmp_path):
    message = scan_error(tmp_path / "nowhere")
    assert "does not exist" in message and "nowhere" in message


def test_a_file_instead_of_a_folder(tmp_path):
    message = scan_error(put(tmp_path, "photos.zip") / "photos.zip")
    assert "is not a folder" in message and "one sub-folder per class" in message


@pytest.mark.parametrize("files", [(), ("cats/readme.txt", ".hidden/a.jpg", "dogs/.x.jpg")],
                         ids=["empty", "nothing-usable"])
def test_a_folder_without_images(tmp_path, files):
    root = put(tmp_path / "data", *files)
    root.mkdir(exist_ok=True)
    message = scan_error(root)
    assert "no images found" in message and "DATA_DIR/<class>/<image>" in message


@pytest.mark.parametrize("layout", [("a.jpg", "b.png", "c.pgm"), ("train/a.jpg", "test/b.jpg")],
                         ids=["data-dir", "split-dirs"])
def test_images_without_class_folders_are_told_to_move(tmp_path, layout):
    message = scan_error(put(tmp_path / "data", *layout))
    assert f"{len(layout)} images lie directly in" in message
    assert "move them into one sub-folder per class" in message


# --- a real data set ----------------------------------------------------------------------------------

def test_scans_the_orl_faces(orl_dir):
    m = scan(orl_dir)
    assert len(m) == 400 and len(m.classes) == 40 and not m.presplit
    assert all(sum(c.values()) == 10 for c in m.counts().values())
    assert len(set(m.digests)) == 400
    assert 0.6 < float((m.splits == 0).mean()) < 0.8
