"""FeatureConfig: the record of everything one stored features array depends on, and its key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .backbones.devices import PRECISIONS
from .backbones.spec import BackboneConfig
from .errors import ParameterError
from .ingest.augment import AugmentParams

DTYPES = ("float16", "float32")
RECORD_VERSION = 2  # 1 (featcache 0.1): names only; 2: preprocessing numbers and builder reference


@dataclass(frozen=True)
class Compute:
    """How the numbers are computed, where that changes them (a little): part of the identity, and
    so of the key, when not the default, so float32 rows never mix with mixed-precision ones."""

    precision: str = "float32"  # the Keras dtype policy of the backbone; pooling is always float32
    jit: bool = False  # the forward pass compiled with XLA (fuses operations: other rounding)
    jpeg_draft: bool = False  # JPEGs at least twice the input size decoded at 1/2, 1/4 or 1/8 scale

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ParameterError("precision", f"unknown precision {self.precision!r}; choose {', '.join(PRECISIONS)}")

    def to_dict(self) -> dict:
        return {"precision": self.precision, "jit": self.jit, "jpeg_draft": self.jpeg_draft}

    @classmethod
    def from_dict(cls, d: dict | None) -> Compute:
        return cls(**{k: v for k, v in (d or {}).items() if k in ("precision", "jit", "jpeg_draft")})

    @property
    def tag(self) -> str:
        """What the key says of it: e.g. "-f16-xla"; "" for the default."""
        short = {"float32": "", "mixed_float16": "-f16", "mixed_bfloat16": "-bf16"}[self.precision]
        return short + ("-xla" if self.jit else "") + ("-draft" if self.jpeg_draft else "")


@dataclass(frozen=True)
class FeatureConfig:
    backbone: BackboneConfig
    augment: AugmentParams = AugmentParams()
    dtype: str = "float16"  # how the features are stored
    compute: Compute = Compute()

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ParameterError("dtype", f"unknown dtype {self.dtype!r}; choose {' or '.join(DTYPES)}")

    def to_dict(self) -> dict:
        return {"record": RECORD_VERSION, "backbone": self.backbone.to_dict(), "augment": self.augment.to_dict(),
                "dtype": self.dtype, "compute": self.compute.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        return cls(BackboneConfig.from_dict(d["backbone"]), AugmentParams.from_dict(d["augment"]), d["dtype"],
                   Compute.from_dict(d.get("compute")))

    def identity(self) -> dict:
        """What the features depend on; two configs with the same identity share stored rows. The
        default Compute is left out, so the keys of earlier stores stay as they were."""
        out = {"backbone": self.backbone.identity(), "augment": self.augment.to_dict(), "dtype": self.dtype}
        if self.compute != Compute():
            out["compute"] = self.compute.to_dict()
        return out

    def differences(self, other: FeatureConfig) -> list[str]:
        """The identity fields (dotted) in which ``other`` differs from this config, with both values."""
        def flat(d, prefix=""):
            for k, v in d.items():
                yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]

        mine, theirs = dict(flat(self.identity())), dict(flat(other.identity()))
        return [f"{k} {theirs.get(k)} -> {mine.get(k)}" for k in sorted(mine.keys() | theirs.keys())
                if mine.get(k) != theirs.get(k)]

    @property
    def key(self) -> str:
        """Readable and unique: e.g. efficientnet_lite0-224-avg-v1-3fa2b9c1 (-f16, -xla, -draft when so;
        a tap: efficientnet_lite0.block4-224-avg-v1-...)."""
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]
        b = self.backbone
        return f"{b.label}-{b.input_size}-{b.pooling}-v{self.augment.views}{self.compute.tag}-{digest}"
