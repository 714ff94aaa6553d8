"""Seeded augmentation views: view 0 is the image itself, views 1..K are random affine variants.

The defaults are the Innolitics recipe (Keras ImageDataGenerator semantics): rotation 15 degrees,
width/height shift 0.15, shear 0.15 degrees, zoom 0.15, channel shift 1, horizontal flip, edges
filled with the nearest pixel. A view's randomness is keyed by (seed, image content digest, view
index), so the same image gives the same views wherever it sits in the data set.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from ..errors import ParameterError

# K is capped for a new extraction (ExtractOptions): every view is one more forward pass per image
# and one more stored row (K = 64 makes extraction 65 times as long and the store 65 times as
# large), and beyond a few dozen the views repeat the same small rotations, shifts, zooms and
# flips, adding little a head can learn from. A record (a store's, a run's) written before the cap
# stays readable; check_augmented_views says why a larger K is refused.
MAX_AUGMENTED_VIEWS = 64


def check_augmented_views(k: int) -> None:
    if k > MAX_AUGMENTED_VIEWS:
        raise ParameterError("augmented_views", f"at most {MAX_AUGMENTED_VIEWS} views per image, got {k}: each view "
                                                "is another forward pass and another stored row per image, and more "
                                                "repeat the same transformations")


@dataclass(frozen=True)
class AugmentParams:
    """K = ``augmented_views`` random views per image; a store holds V = ``views`` = 1 + K."""

    augmented_views: int = 0  # K, on top of the un-augmented view 0
    rotation: float = 15.0  # degrees, uniform in [-r, r]
    width_shift: float = 0.15  # fraction of width
    height_shift: float = 0.15
    shear: float = 0.15  # degrees (as Keras' ImageDataGenerator shear_range)
    zoom: float = 0.15  # scale uniform in [1 - z, 1 + z], per axis
    channel_shift: float = 1.0  # added to all channels, uniform in [-c, c] (0-255 scale)
    horizontal_flip: bool = True
    vertical_flip: bool = False
    seed: int = 0

    def __post_init__(self):
        if int(self.augmented_views) != self.augmented_views or self.augmented_views < 0:
            raise ParameterError("augmented_views", f"must be a whole number, 0 or more, got {self.augmented_views}")
        for name in ("rotation", "width_shift", "height_shift", "shear", "zoom", "channel_shift"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ParameterError(name, f"must be a finite number, 0 or more, got {value}")
        if self.zoom >= 1:
            raise ParameterError("zoom", f"must be below 1 (scales are drawn from [1 - zoom, 1 + zoom]), got {self.zoom}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AugmentParams:
        d = dict(d)
        if "views" in d:  # featcache 0.1 called K "views"
            d["augmented_views"] = d.pop("views")
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    @property
    def views(self) -> int:
        """V: stored views per image, view 0 (un-augmented) included."""
        return 1 + self.augmented_views


def _rng(seed: int, digest: str, view: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(digest[:16], 16), view])


def augment_view(image: np.ndarray, params: AugmentParams, digest: str, view: int) -> np.ndarray:
    """Return view ``view`` of an (H, W, 3) uint8 image as uint8; view 0 is the image unchanged."""
    if view == 0:
        return image
    from scipy import ndimage  # here, not at import: `featcache --help` stays instant
    rng = _rng(params.seed, digest, view)
    h, w = image.shape[:2]
    theta = math.radians(rng.uniform(-params.rotation, params.rotation))
    shift_rows = rng.uniform(-params.height_shift, params.height_shift) * h
    shift_cols = rng.uniform(-params.width_shift, params.width_shift) * w
    shear = math.radians(rng.uniform(-params.shear, params.shear))
    zoom_r, zoom_c = rng.uniform(1 - params.zoom, 1 + params.zoom, 2)
    flip_h = params.horizontal_flip and rng.random() < 0.5
    flip_v = params.vertical_flip and rng.random() < 0.5
    channel_shift = rng.uniform(-params.channel_shift, params.channel_shift)

    # Output pixel (r, c) samples input pixel M @ (r, c, 1): rotation . shift . shear . zoom,
    # taken about the image centre.
    rot = np.array([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    shift = np.array([[1, 0, shift_rows], [0, 1, shift_cols], [0, 0, 1]])
    shear_m = np.array([[1, -math.sin(shear), 0], [0, math.cos(shear), 0], [0, 0, 1]])
    zoom = np.diag([zoom_r, zoom_c, 1.0])
    cr, cc = h / 2 - 0.5, w / 2 - 0.5
    to_centre = np.array([[1, 0, cr], [0, 1, cc], [0, 0, 1]])
    from_centre = np.array([[1, 0, -cr], [0, 1, -cc], [0, 0, 1]])
    m = to_centre @ rot @ shift @ shear_m @ zoom @ from_centre

    out = np.empty(image.shape, np.float32)
    src = image.astype(np.float32)
    for c in range(image.shape[2]):
        ndimage.affine_transform(src[..., c], m[:2, :2], offset=m[:2, 2], order=1, mode="nearest",
                                 output=out[..., c])
    out += channel_shift
    if flip_h:
        out = out[:, ::-1]
    if flip_v:
        out = out[::-1]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
