"""An audit's files: a contact sheet per finding type, the 2-D map, and every flagged image as CSV
and JSON (the same records `audit --json` prints)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .embedding_map import draw_map, embed_2d
from .images import ImageFiles
from .records import AuditResult
from .sheets import Tile, contact_sheet

REPORT_FILE = "audit.json"  # every finding; also what makes a folder an audit's, which a new audit replaces
CSV_COLUMNS = ["finding", "rank", "path", "label", "split", "score", "suggested", "group", "detail"]
GROUP_COLOURS = ("black", "tab:blue")  # alternate per duplicate group, so a group's tiles read as one
ANNOTATED_OUTLIERS = 10
TITLES = {"label_issues": "likely label errors, lowest out-of-fold score first",
          "duplicates": "duplicate groups (LEAK: across splits, LABELS: different classes)",
          "outliers": "outliers, farthest from their nearest neighbours first"}


def finding_rows(result: AuditResult) -> list[dict]:
    """One row per flagged image (a duplicate group gives one per member), ranked within each finding."""
    rows = [{"finding": "label_issue", "rank": r, "path": x.image.path, "label": x.image.label, "split": x.image.split,
             "score": x.score, "suggested": x.suggested, "group": "",
             "detail": f"p(given)={x.given_probability:.3f} p(suggested)={x.suggested_probability:.3f}"}
            for r, x in enumerate(result.label_issues, 1)]
    for r, g in enumerate(result.duplicates, 1):
        flags = [name for name, on in (("leak", g.leak), ("label conflict", g.label_conflict)) if on]
        rows += [{"finding": f"{g.kind}_duplicate", "rank": r, "path": im.path, "label": im.label, "split": im.split,
                  "score": g.similarity, "suggested": "", "group": r,
                  "detail": "; ".join([*flags, f"pixel difference {g.pixel_difference:.2f}"])} for im in g.images]
    for r, g in enumerate(result.group_leaks, 1):
        rows += [{"finding": "group_leak", "rank": r, "path": im.path, "label": im.label, "split": im.split,
                  "score": len(g.images), "suggested": "", "group": g.group,
                  "detail": ", ".join(f"{s} {n}" for s, n in g.splits.items())} for im in g.images]
    rows += [{"finding": "outlier", "rank": r, "path": x.image.path, "label": x.image.label, "split": x.image.split,
              "score": x.score, "suggested": "", "group": "", "detail": f"z={x.z:.1f}"}
             for r, x in enumerate(result.outliers, 1)]
    return rows


def sheet_tiles(result: AuditResult, limit: int) -> dict[str, list[Tile]]:
    tiles = {
        "label_issues": [Tile(x.image.index, (f"given {x.image.label} \u2192 {x.suggested}",
                                              f"p(given) {x.given_probability:.3f}  [{x.image.split}]"))
                         for x in result.label_issues[:limit]],
        "outliers": [Tile(x.image.index, (f"{x.image.label} [{x.image.split}]", f"k-NN distance {x.score:.3f}"))
                     for x in result.outliers[:limit]],
        "duplicates": [],
    }
    for g_no, g in enumerate(result.duplicates, 1):
        flag = " LEAK" * g.leak + " LABELS" * g.label_conflict
        tiles["duplicates"] += [Tile(im.index, (f"#{g_no} {g.kind}{flag}", f"{im.label} [{im.split}] cos {g.similarity:.3f}"),
                                     GROUP_COLOURS[g_no % 2]) for im in g.images]
    tiles["duplicates"] = tiles["duplicates"][:limit]
    return tiles


def write_report(out: str | Path, result: AuditResult, unit: np.ndarray, labels: np.ndarray, files: ImageFiles,
                 limit: int, map_method: str = "pca", seed: int = 0, final: Path | None = None) -> dict[str, str]:
    """Write everything under ``out``; returns {what: path}, the paths under ``final`` (where ``out``
    goes once complete; default ``out`` itself). ``unit``: the unit-normalised view-0 features the
    audit searched, for the map."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    marks = {"label_issues": np.array([x.image.index for x in result.label_issues], np.int64),
             "duplicates": np.array([im.index for g in result.duplicates for im in g.images], np.int64),
             "outliers": np.array([x.image.index for x in result.outliers], np.int64)}
    for finding, tiles in sheet_tiles(result, limit).items():
        if tiles:
            title = f"{TITLES[finding]}: {len(tiles)} of {len(marks[finding])} images"
            written[f"{finding}_sheet"] = contact_sheet(tiles, files, out / f"{finding}.png", title).name
    xy = embed_2d(unit, map_method, seed)
    written["map"] = draw_map(xy, labels, result.classes, marks, files.paths, out / "map.png",
                              f"{result.key}: {map_method.upper()} of view-0 features, {len(unit)} images",
                              annotate=marks["outliers"][:ANNOTATED_OUTLIERS]).name
    with (out / "flagged.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(finding_rows(result))
    written["csv"], written["json"] = "flagged.csv", REPORT_FILE
    result.files = {what: str(Path(final or out) / name) for what, name in written.items()}
    (out / REPORT_FILE).write_text(json.dumps(result.to_dict(), indent=2))
    return result.files
