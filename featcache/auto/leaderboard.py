"""The leaderboard of a search: every scored candidate, as JSON and CSV in the output folder.

Written after every candidate, each file replaced in one step (atomic.py): a search stopped at any
point leaves the last complete leaderboard, and a search run again with the same folder reads it
back and skips the candidates it holds (recognised by their digests: search.py
``candidate_digest``; a candidate of another store, other images, other folds or other features
has another digest and is scored again).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..errors import FeatcacheError
from .candidates import Candidate
from .search import SEARCH_METRICS, Score

BOARD_JSON = "leaderboard.json"
BOARD_CSV = "leaderboard.csv"
FILES = (BOARD_JSON, BOARD_CSV)
MAX_BOARD_BYTES = 64 << 20


@dataclass(frozen=True)
class Entry:
    candidate: Candidate
    digest: str
    score: Score
    feature_dim: int
    cost: tuple

    def to_dict(self) -> dict:
        return {"digest": self.digest, "label": self.candidate.label, "phase": self.candidate.phase,
                **self.candidate.record(), "feature_dim": self.feature_dim, "cost": list(self.cost),
                **self.score.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Entry:
        return cls(Candidate.from_record(d, d.get("phase", "single")), str(d["digest"]), Score.from_dict(d),
                   int(d["feature_dim"]), tuple(d["cost"]))


def read_entries(folder: Path) -> list[Entry]:
    """The entries an earlier search left in ``folder`` (none when it holds no leaderboard)."""
    path = folder / BOARD_JSON
    if not path.is_file():
        return []
    if path.stat().st_size > MAX_BOARD_BYTES:
        raise FeatcacheError(f"{path} is larger than a leaderboard can be ({path.stat().st_size} bytes)",
                             remedy="remove it, or choose another folder")
    try:
        d = json.loads(path.read_text())
        return [Entry.from_dict(e) for e in d.get("board", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise FeatcacheError(f"{path} is not a leaderboard this version can read ({exc})",
                             remedy="remove it to start the search again, or choose another folder") from None


def csv_rows(board: list[dict]) -> str:
    """One row per candidate: every metric's mean and interval, tied, cost, seconds."""
    columns = ["rank", "label", "keys", "head", "params", "combine", "tta", "phase",
               *[f"{m}{s}" for m in SEARCH_METRICS for s in ("", "_low", "_high")],
               "tied", "vs_best_p", "winner", "feature_dim", "cost", "seconds"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, extrasaction="ignore")
    w.writeheader()
    for row in board:
        flat = {**row, "keys": "+".join(row["keys"]), "params": json.dumps(row["params"], sort_keys=True),
                "cost": " ".join(map(str, row["cost"]))}
        for m in SEARCH_METRICS:
            i = row["intervals"][m]
            flat |= {m: i["mean"], f"{m}_low": i["low"], f"{m}_high": i["high"]}
        w.writerow(flat)
    return buf.getvalue()


def write_board(folder: Path, record: dict) -> None:
    """leaderboard.json (``record``) and leaderboard.csv (its ``board``), each replaced in one step."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in ((BOARD_JSON, json.dumps(record, indent=2, default=str)),
                       (BOARD_CSV, csv_rows(record["board"]))):
        with atomic.replaced(folder / name) as tmp:
            tmp.write_text(text)


__all__ = ["BOARD_CSV", "BOARD_JSON", "FILES", "Entry", "csv_rows", "read_entries", "write_board"]
