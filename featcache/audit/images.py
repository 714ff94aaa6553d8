"""The audited images' files: thumbnails for pixel checks and contact sheets, decoded by the one
code path extract uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ImageDecodeError
from ..ingest.decode import decode_image
from ..ingest.sources import is_url, join


class ImageFiles:
    """Files of a FeatureSet's relative paths under one data folder; an unreadable file gives None
    (an audit reports what it can rather than stopping at a moved or deleted image)."""

    def __init__(self, root: str | Path, paths: list[str]):
        self.root = root if is_url(root) else Path(root)  # a URL: read through its source (sources.py)
        self.paths = paths

    def _rgb(self, index: int) -> Image.Image | None:
        try:
            return decode_image(join(str(self.root), self.paths[index])).convert("RGB")
        except (ImageDecodeError, OSError):
            return None

    def thumbnail(self, index: int, size: int) -> Image.Image | None:
        """RGB, fitted inside size x size, aspect kept."""
        if (img := self._rgb(index)) is not None:
            img.thumbnail((size, size), Image.Resampling.BOX)
        return img

    def fingerprint(self, index: int, size: int = 16) -> np.ndarray | None:
        """(size, size, 3) float32 pixels, squashed to a square and area-averaged: compression
        noise averages out, while two different photos of one scene still differ."""
        img = self._rgb(index)
        return None if img is None else np.asarray(img.resize((size, size), Image.Resampling.BOX), np.float32)
