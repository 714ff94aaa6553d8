"""Checksums that make every read verifiable, whatever the backend.

Each row of a feature config has a CRC-32 that binds the image content digest the row belongs to,
its status and, for a done row, the stored bytes of its features. A deleted chunk (read back as
zeros), bytes changed on disk, a status flipped to done or failed, a row moved to another image:
each makes the row's checksum disagree. Pending rows carry none: they are computed again anyway.

The records beside the rows that change what they mean (a manifest's classes, data root and
split; a config's record: preprocessing numbers, input size, seed, chunk layout) carry a digest
(``record_digest``) that every read checks.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Sequence

import numpy as np

from .schema import DONE, FAILED, PENDING


def row_checksums(digests: Sequence[str], status: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(rows,) uint32 for rows with (rows,) digests, status and (rows, V, D) stored features."""
    feats = np.ascontiguousarray(features, dtype=features.dtype.newbyteorder("<"))
    out = np.zeros(len(status), np.uint32)
    for i, s in enumerate(status.tolist()):
        if s == PENDING:
            continue
        crc = zlib.crc32(bytes([s]), zlib.crc32(digests[i].encode()))
        out[i] = zlib.crc32(feats[i], crc) if s == DONE else crc
    return out


def damaged_rows(digests: Sequence[str], status: np.ndarray, checksum: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Indices of the rows whose stored checksum disagrees (or whose status is no known code)."""
    status = np.asarray(status)
    known = np.isin(status, (PENDING, DONE, FAILED))
    expected = row_checksums(digests, np.where(known, status, PENDING).astype(np.int8), features)
    bad = ~known | ((status != PENDING) & (expected != np.asarray(checksum, np.uint32)))
    return np.flatnonzero(bad)


def array_checksum(values) -> int:
    """CRC-32 of a manifest array: strings joined by newlines (they hold none), numbers as bytes."""
    if isinstance(values, np.ndarray):
        return zlib.crc32(np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")))
    return zlib.crc32("\n".join(values).encode())


def record_digest(record: dict) -> str:
    """Digest of a metadata record as stored (JSON): the same after a round trip through any backend."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
