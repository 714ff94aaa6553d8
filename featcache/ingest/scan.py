"""Scan a class-per-folder image tree into a Manifest: paths, labels, classes, digests, split.

Two layouts:
- ``DATA_DIR/<class>/<image>``: the split is decided per image from its content digest, so it is
  stable when images are added or renamed and identical files never straddle train and test.
- ``DATA_DIR/{train,validation|val,test}/<class>/<image>``: that split is kept.

Image files that cannot be used are skipped, never opened, and listed on the Manifest with the
reason (``Manifest.unreadable``): FIFOs, sockets and devices (opening a FIFO blocks forever), broken
and looping symbolic links, and names that are not UTF-8 (a store holds paths as UTF-8 text).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FeatcacheError, ImageDecodeError, ParameterError, shortlist
from ..paths import printable_path
from .decode import check_regular_file, is_image_path, is_utf8_path
from .label_file import LabelSource, LabelTable, check_groups_in_one_split, group_of, read_label_file
from .label_file import group_pattern as _group_pattern
from .sources import is_url, join, open_source, read_location
from .splits import SPLIT_ALIASES, SPLITS


@dataclass(frozen=True)
class SplitFractions:
    train: float = 0.7
    validation: float = 0.2
    test: float = 0.1

    @classmethod
    def parse(cls, text: str) -> SplitFractions:
        """'70/20/10' or '0.8/0.1/0.1' -> fractions summing to 1."""
        try:
            parts = [float(p) for p in text.replace(",", "/").split("/")]
        except ValueError:
            parts = []
        if len(parts) != 3 or not all(math.isfinite(p) and p >= 0 for p in parts) or parts[0] == 0:
            raise ParameterError("split", f"invalid split {text!r}: give train/validation/test fractions, e.g. 70/20/10")
        total = sum(parts)
        # percentages sum to 100, fractions to 1 (within rounding: 33.3/33.3/33.4); anything else is
        # a typo that rescaling would silently turn into another split (90/20/10 -> 75/16.7/8.3)
        if not (abs(total - 100) <= 0.5 or abs(total - 1) <= 0.005):
            raise ParameterError("split", f"the fractions of {text!r} sum to {total:g}: give percentages summing "
                                          "to 100 (70/20/10) or fractions summing to 1 (0.7/0.2/0.1)")
        return cls(*(p / total for p in parts))

    def __post_init__(self):
        values = (self.train, self.validation, self.test)
        if not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in values) or \
                abs(sum(values) - 1) > 1e-6:
            raise ParameterError("split", f"train, validation and test fractions must be 0 or more and sum to 1, "
                                          f"got {values}")

    def __str__(self) -> str:
        return "/".join(f"{round(100 * f, 4):g}" for f in (self.train, self.validation, self.test))


@dataclass(frozen=True)
class SkippedImage:
    """An image file (or a folder) that could not be used, and why: found by scan() or by decoding."""

    path: str  # relative to the data folder, POSIX separators; bytes that are not UTF-8 as \xNN
    reason: str


@dataclass(frozen=True)
class Manifest:
    """Row i describes image i; every array has one entry per image, sorted by path."""

    root: str
    classes: list[str]
    paths: list[str]  # relative to root, POSIX separators
    labels: np.ndarray  # int32 index into classes (multi-label: the image's first label, -1 when it has none)
    digests: list[str]  # content digest (hex)
    splits: np.ndarray  # int8: 0 train, 1 validation, 2 test
    presplit: bool = False
    split_fractions: SplitFractions = field(default_factory=SplitFractions)
    ignored: list[str] = field(default_factory=list)  # files skipped for their extension, and stray images
    unreadable: list[SkippedImage] = field(default_factory=list)  # image files skipped, with the reason
    empty_classes: list[str] = field(default_factory=list)  # class folders without a usable image
    groups: list[str] | None = None  # per image, where images come in groups (one split per group)
    # multi-label: (n, classes) uint8, 1 where image i has class j (None: one label per image)
    label_sets: np.ndarray | None = None

    @property
    def multilabel(self) -> bool:
        return self.label_sets is not None

    def __len__(self) -> int:
        return len(self.paths)

    def abspath(self, i: int) -> Path:
        return Path(self.root) / self.paths[i]

    def location(self, i: int) -> str:
        """Where image i is read from: a local path, or a URL under a URL data root."""
        return join(self.root, self.paths[i])

    def counts(self) -> dict[str, dict[str, int]]:
        return split_counts(self.classes, self.labels, self.splits, self.label_sets)


def split_counts(classes: list[str], labels: np.ndarray, splits: np.ndarray,
                 label_sets: np.ndarray | None = None) -> dict[str, dict[str, int]]:
    """{class: {split: number of images}} (multi-label: the images holding the class)"""
    out = {c: dict.fromkeys(SPLITS, 0) for c in classes}
    if label_sets is not None:
        for j, c in enumerate(classes):
            for s, name in enumerate(SPLITS):
                out[c][name] = int(np.sum(label_sets[np.asarray(splits) == s, j]))
        return out
    for label, split in zip(labels.tolist(), splits.tolist(), strict=True):
        out[classes[label]][SPLITS[split]] += 1
    return out


def multi_hot(label_sets: list[tuple[str, ...]], classes: list[str]) -> np.ndarray:
    """Each image's labels -> (n, classes) uint8, 1 where the image has the class."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(label_sets), len(classes)), np.uint8)
    for i, labels in enumerate(label_sets):
        out[i, [index[c] for c in labels]] = 1
    return out


def first_labels(label_sets: np.ndarray) -> np.ndarray:
    """Multi-hot rows -> the index of each row's first class, -1 for a row without any."""
    sets = np.asarray(label_sets)
    return np.where(sets.any(axis=1), np.argmax(sets, axis=1), -1).astype(np.int32)


def content_digest(path: Path | str, block: int = 1 << 20) -> str:
    """The digest of a file's bytes (a local file, or an object at a URL: the same bytes, the same digest)."""
    h = hashlib.blake2b(digest_size=16)
    if is_url(path):
        h.update(read_location(path, digesting=True))
        return h.hexdigest()
    with Path(path).open("rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


URL_DIGEST_THREADS = 16  # objects read at once while a URL tree is digested


def _digest_one(path) -> tuple[str, str]:
    try:
        return content_digest(path), ""
    except ImageDecodeError as exc:  # an object gone (404) or forbidden since the listing
        return "", exc.reason
    except OSError as exc:  # e.g. no read permission: stat passed, open did not
        return "", f"cannot read file ({exc.strerror})"


def digest_files(paths: list[Path | str]) -> list[tuple[str, str]]:
    """(content digest, "") or ("", why the file cannot be read) per path. Scanning's slow part (it
    reads every byte): a distributed executor runs it on its workers, a batch of paths per task.
    Objects at URLs are read ``URL_DIGEST_THREADS`` at a time (their latency, not the disk, is the cost)."""
    if paths and any(is_url(p) for p in paths):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(URL_DIGEST_THREADS, len(paths)),
                                thread_name_prefix="featcache-digest") as pool:
            return list(pool.map(_digest_one, paths))
    return [_digest_one(Path(p)) for p in paths]


def split_from_digest(digest: str, fractions: SplitFractions) -> int:
    u = int(digest[:15], 16) / 16**15  # uniform in [0, 1], a pure function of the content
    f = fractions
    if u < f.train or f.validation == f.test == 0:  # (float rounding can make u 1.0: an empty
        return 0                                     # split must stay empty all the same)
    return 1 if u < f.train + f.validation or f.test == 0 else 2


def group_digest(group: str) -> str:
    """A group's split is drawn as an image's is, from a digest of its name: adding a group moves
    no other image, and every image of a group lands in the same split."""
    return hashlib.blake2b(b"featcache group\0" + group.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


def _walk_images(folder: Path, root: Path, ignored: list[str], unreadable: list[SkippedImage]) -> list[Path]:
    out = []
    # Symlinks are followed, but a folder is walked once, and never one holding this class folder:
    # a link back up the tree would otherwise loop forever or pull other classes in.
    above = {str(p) for p in Path(os.path.realpath(folder)).parents}
    seen: set[str] = set()

    def unlistable(exc: OSError) -> None:  # os.walk would skip the folder silently
        unreadable.append(SkippedImage(_relative(exc.filename, root), f"cannot list folder ({exc.strerror})"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlistable, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or real in above:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            rel = _relative(p, root)
            if not is_image_path(p):
                ignored.append(rel)
            elif not is_utf8_path(p.relative_to(root)):
                unreadable.append(SkippedImage(rel, "the name is not valid UTF-8 (featcache stores paths as "
                                                "UTF-8 text): rename it"))
            elif reason := _unusable(p):
                unreadable.append(SkippedImage(rel, reason))
            else:
                out.append(p)
    return out


def _relative(path: str | Path, root: Path) -> str:
    return printable_path(Path(path).relative_to(root).as_posix())


def _unusable(path: Path) -> str | None:
    """Why path is not a regular file, from its stat alone (never opened), or None."""
    try:
        check_regular_file(path)
    except ImageDecodeError as exc:
        return exc.reason
    return None


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _stray_images(folder: Path, root: Path) -> list[str]:
    """Images lying directly in a folder that should hold only class folders."""
    return sorted(_relative(p, root) for p in folder.iterdir()
                  if p.is_file() and is_image_path(p) and not p.name.startswith("."))


@dataclass
class _Tree:
    """A class-per-folder tree as found: (relative path, class, forced split) per usable image file."""

    presplit: bool
    entries: list[tuple[str, str, int | None]]
    stray: list[str]  # images lying where only class folders should be
    class_names: list[str]  # every class folder, as printed
    ignored: list[str] = field(default_factory=list)
    unreadable: list[SkippedImage] = field(default_factory=list)


def _check_layout(top: list[str], shown: str) -> bool:
    """Whether the top folders are splits (train/, validation/, test/); a mix of splits and classes is refused."""
    presplit = bool(top) and all(d.lower() in SPLIT_ALIASES for d in top)
    split_named = [d for d in top if d.lower() in SPLIT_ALIASES]
    if split_named and not presplit:  # "train" as a class beside real classes is a layout mistake
        others = [d for d in top if d.lower() not in SPLIT_ALIASES]
        raise FeatcacheError(f"data folder {shown} holds {', '.join(split_named)} beside "
                             f"{shortlist(others, 5)}: either every sub-folder is a split (train/, validation/, "
                             "test/, each holding one folder per class) or every one is a class",
                             remedy="move the class folders into the split folders, or rename the split folder")
    return presplit


def _walked_tree(root: Path) -> _Tree:
    """A local folder's tree, walked (links followed once, special files skipped with a reason)."""
    top = _class_dirs(root)
    presplit = _check_layout([d.name for d in top], printable_path(root))
    ignored: list[str] = []
    unreadable: list[SkippedImage] = []
    entries: list[tuple[str, str, int | None]] = []  # (relpath, class, forced split)
    stray = _stray_images(root, root)
    class_dirs: list[tuple[Path, int | None]] = []  # (class folder, forced split)
    if presplit:
        for split_dir in top:
            stray += _stray_images(split_dir, root)
            class_dirs += [(d, SPLIT_ALIASES[split_dir.name.lower()]) for d in _class_dirs(split_dir)]
    else:
        class_dirs = [(d, None) for d in top]
    for class_dir, forced in class_dirs:
        for p in _walk_images(class_dir, root, ignored, unreadable):
            entries.append((p.relative_to(root).as_posix(), class_dir.name, forced))
    return _Tree(presplit, entries, stray, [printable_path(d.name) for d, _ in class_dirs], ignored, unreadable)


def _listed_tree(files: list[str], shown: str) -> _Tree:
    """The same tree from one listing of every file under a URL prefix (relative POSIX paths)."""
    files = [f for f in files if not any(part.startswith(".") for part in f.split("/"))]
    top = sorted({f.split("/", 1)[0] for f in files if "/" in f})
    presplit = _check_layout(top, shown)
    depth = 2 if presplit else 1  # the folders above an image's class folder
    stray = sorted(f for f in files if f.count("/") < depth and is_image_path(f))
    entries, ignored, class_names = [], [], set()
    for f in files:
        parts = f.split("/")
        if len(parts) <= depth:
            if not is_image_path(f):
                ignored.append(f)
            continue
        cls = parts[depth - 1]
        class_names.add(cls)
        if not is_image_path(f):
            ignored.append(f)
            continue
        entries.append((f, cls, SPLIT_ALIASES[parts[0].lower()] if presplit else None))
    return _Tree(presplit, entries, stray, sorted(class_names), ignored)


def scan(data_dir: str | Path, split: SplitFractions | str | None = None,
         digests: Callable[[list[Path]], list[tuple[str, str]]] = digest_files,
         labels: LabelSource | LabelTable | None = None, group_by: str | None = None) -> Manifest:
    """``digests``: computes the files' content digests (``digest_files``, or an executor's).
    ``labels``: a label table (label_file.py) naming the images and their labels instead of the
    folders. ``group_by``: a regular expression on each relative path naming its group (its first
    capture group, or the whole match); the split is then drawn per group."""
    fractions = SplitFractions.parse(split) if isinstance(split, str) else (split or SplitFractions())
    if is_url(data_dir):
        source = open_source(data_dir)
        if labels is not None:
            raise ParameterError("labels", f"a label table of images at a URL ({source.root}) is not supported yet; "
                                           "give the class-per-folder tree, or a local copy of the images")
        tree = _listed_tree(source.list_files(), source.root)
        root_text, shown = source.root, source.root
    else:
        root = Path(data_dir).expanduser()
        if not root.exists():
            raise FeatcacheError(f"data folder {printable_path(root)} does not exist")
        if not root.is_dir():
            raise FeatcacheError(f"{printable_path(root)} is not a folder: give a folder with one sub-folder per "
                                 "class")
        if not is_utf8_path(root.resolve()):  # the store records it as UTF-8 text
            raise FeatcacheError(f"{printable_path(root.resolve())}: the folder's path is not valid UTF-8; "
                                 "rename it")
        if isinstance(labels, LabelSource):
            labels = read_label_file(labels, root, group_by)
        if labels is not None:
            return _scan_table(root, labels, fractions, digests)
        tree = _walked_tree(root)
        root_text, shown = str(root.resolve()), printable_path(root)
    pattern = _group_pattern(group_by)
    presplit, entries, stray, class_names = tree.presplit, tree.entries, tree.stray, tree.class_names
    ignored, unreadable = tree.ignored, tree.unreadable
    entries.sort()
    usable, found = _digested(entries, [e[0] for e in entries], root_text, digests, unreadable)
    if not usable:
        raise FeatcacheError(f"no images found in {shown}{_no_images_hint(stray, unreadable)}. "
                             "Expected DATA_DIR/<class>/<image> or DATA_DIR/{train,validation,test}/<class>/<image> "
                             "with extensions such as .jpg .png .pgm")
    classes = sorted({c for _, c, _ in usable})
    index = {c: i for i, c in enumerate(classes)}
    groups = [group_of(pattern, rel) for rel, _, _ in usable] if pattern else None
    if groups and presplit:
        check_groups_in_one_split(list(zip(groups, [s for _, _, s in usable], strict=True)), shown)
    splits = _splits([s for _, _, s in usable], found, groups, fractions)
    return Manifest(
        root=root_text,
        classes=classes,
        paths=[rel for rel, _, _ in usable],
        labels=np.array([index[c] for _, c, _ in usable], np.int32),
        digests=found,
        splits=np.array(splits, np.int8),
        presplit=presplit,
        split_fractions=fractions,
        ignored=ignored + stray,
        unreadable=unreadable,
        empty_classes=sorted(set(class_names) - set(classes)),
        groups=groups,
    )


def _scan_table(root: Path, table: LabelTable, fractions: SplitFractions,
                digests: Callable[[list[Path]], list[tuple[str, str]]]) -> Manifest:
    """The images a label table lists, with its labels (and splits, groups): the folders are not read."""
    unreadable: list[SkippedImage] = []
    rows = []
    for row in table.rows:
        p = root / row.path
        if not is_utf8_path(Path(row.path)):
            unreadable.append(SkippedImage(printable_path(row.path), "the name is not valid UTF-8: rename it"))
        elif reason := _unusable(p):
            unreadable.append(SkippedImage(row.path, reason))
        else:
            rows.append(row)
    usable, found = _digested(rows, [r.path for r in rows], root, digests, unreadable)
    if not usable:
        raise FeatcacheError(f"none of the images {printable_path(table.source.file)} lists can be read"
                             + (f" (e.g. {unreadable[0].path}: {unreadable[0].reason})" if unreadable else ""))
    classes = sorted({c for r in usable for c in r.labels})
    index = {c: i for i, c in enumerate(classes)}
    groups = [r.group for r in usable] if table.grouped else None
    splits = _splits([r.split for r in usable], found, groups, fractions)
    sets = multi_hot([r.labels for r in usable], classes) if table.multilabel else None
    return Manifest(
        root=str(root.resolve()), classes=classes, paths=[r.path for r in usable],
        labels=first_labels(sets) if sets is not None else np.array([index[r.label] for r in usable], np.int32),
        digests=found, splits=np.array(splits, np.int8), presplit=table.presplit, split_fractions=fractions,
        unreadable=unreadable, groups=groups, label_sets=sets,
    )


def _digested(items: list, rels: list[str], root: Path | str,
              digests: Callable[[list[Path]], list[tuple[str, str]]],
              unreadable: list[SkippedImage]) -> tuple[list, list[str]]:
    """The items whose file digests, with their digests; the others join ``unreadable``."""
    usable, found = [], []
    files = [join(root, r) for r in rels] if is_url(root) else [Path(root) / r for r in rels]
    for item, rel, (digest, why) in zip(items, rels, digests(files), strict=True):
        if why:
            unreadable.append(SkippedImage(rel, why))
        else:
            usable.append(item)
            found.append(digest)
    return usable, found


def _splits(given: list[int | None], digests: list[str], groups: list[str] | None,
            fractions: SplitFractions) -> list[int]:
    """The given split, else one drawn from the image's digest (its group's, where it has one)."""
    return [s if s is not None else split_from_digest(group_digest(groups[i]) if groups else d, fractions)
            for i, (s, d) in enumerate(zip(given, digests, strict=True))]


def _no_images_hint(stray: list[str], unreadable: list[SkippedImage]) -> str:
    if stray:
        where = sorted({str(Path(s).parent) for s in stray})
        return (f" ({len(stray)} images lie directly in {', '.join(w if w != '.' else 'it' for w in where)}, "
                "not in class folders: move them into one sub-folder per class)")
    if unreadable:
        return f" ({len(unreadable)} image files cannot be read, e.g. {unreadable[0].path}: {unreadable[0].reason})"
    return ""
