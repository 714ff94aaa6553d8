"""A multi-label data set of real photos: canvases of two or three ORL faces side by side, whose
labels are the people present (tests/test_multilabel.py, benchmarks/bench_multilabel.py)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

SLOT = 32  # each face is resized to SLOT x SLOT; a canvas is 3 slots wide


def make_canvases(orl_dir: Path, out: Path, people: int = 5, canvases: int = 60, slot: int = SLOT,
                  seed: int = 0) -> tuple[Path, list[tuple[str, tuple[str, ...]]]]:
    """``canvases`` PNGs in the flat folder ``out``, each holding 2 or 3 faces of ``people`` ORL
    people in random slots (an empty slot is grey), and ``out/../labels.csv`` (``path,labels``,
    ``|``-delimited). Returns the table's path and its rows (file name, sorted label set)."""
    rng = random.Random(seed)
    persons = sorted((d for d in orl_dir.iterdir() if d.is_dir()), key=lambda d: int(d.name[1:]))[:people]
    photos = {p.name: sorted(p.glob("*.pgm")) for p in persons}
    faces = {}
    out.mkdir(parents=True, exist_ok=True)
    rows, seen = [], set()
    for i in range(canvases):
        k = 2 + (i % 2)
        while True:  # every canvas differs (identical files would share one digest)
            chosen = rng.sample(sorted(photos), k)
            slots = rng.sample(range(3), k)
            picked = [rng.choice(photos[who]) for who in chosen]
            if (layout := tuple(sorted(zip(slots, picked, strict=True)))) not in seen:
                seen.add(layout)
                break
        canvas = np.full((slot, 3 * slot), 128, np.uint8)
        for where, photo in zip(slots, picked, strict=True):
            if photo not in faces:
                faces[photo] = np.asarray(Image.open(photo).convert("L").resize((slot, slot), Image.BILINEAR))
            canvas[:, where * slot:(where + 1) * slot] = faces[photo]
        name = f"{rng.getrandbits(40):010x}.png"
        Image.fromarray(canvas).convert("RGB").save(out / name)
        rows.append((name, tuple(sorted(chosen))))
    table = out.parent / "labels.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels"])
        w.writerows([(name, "|".join(labels)) for name, labels in rows])
    return table, rows


def write_json_and_columns(rows: list[tuple[str, tuple[str, ...]]], folder: Path) -> tuple[Path, Path, Path]:
    """The same label sets as a JSON-list CSV cell, a JSONL list value and one 0/1 column per class."""
    classes = sorted({c for _, labels in rows for c in labels})
    as_json = folder / "labels_json.csv"
    with as_json.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels"])
        w.writerows([(name, json.dumps(list(labels))) for name, labels in rows])
    jsonl = folder / "labels.jsonl"
    jsonl.write_text("".join(json.dumps({"path": name, "labels": list(labels)}) + "\n" for name, labels in rows))
    columns = folder / "labels_columns.csv"
    with columns.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", *classes])
        w.writerows([(name, *(int(c in labels) for c in classes)) for name, labels in rows])
    return as_json, jsonl, columns
