"""featcache: run a frozen ImageNet backbone once, cache its features, train heads in seconds."""

from __future__ import annotations

__version__ = "0.1.0"
