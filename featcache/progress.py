"""Progress bars on stderr (tqdm), silenced with enabled=False or when not wanted in scripts."""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, unit: str = "img", enabled: bool = True):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1, mininterval=0.5)
