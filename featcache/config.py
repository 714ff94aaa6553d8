"""FeatureConfig: the record of everything one stored features array depends on, and its key."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .backbones.spec import BackboneConfig
from .errors import ParameterError
from .ingest.augment import AugmentParams

DTYPES = ("float16", "float32")
RECORD_VERSION = 2  # 1 (featcache 0.1): names only; 2: preprocessing numbers and builder reference


@dataclass(frozen=True)
class FeatureConfig:
    backbone: BackboneConfig
    augment: AugmentParams = AugmentParams()
    dtype: str = "float16"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ParameterError("dtype", f"unknown dtype {self.dtype!r}; choose {' or '.join(DTYPES)}")

    def to_dict(self) -> dict:
        return {"record": RECORD_VERSION, "backbone": self.backbone.to_dict(), "augment": self.augment.to_dict(),
                "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        return cls(BackboneConfig.from_dict(d["backbone"]), AugmentParams.from_dict(d["augment"]), d["dtype"])

    def identity(self) -> dict:
        """What the features depend on; two configs with the same identity share stored rows."""
        return {"backbone": self.backbone.identity(), "augment": self.augment.to_dict(), "dtype": self.dtype}

    @property
    def key(self) -> str:
        """Readable and unique: e.g. efficientnet_lite0-224-avg-v1-3fa2b9c1."""
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]
        b = self.backbone
        return f"{b.name}-{b.input_size}-{b.pooling}-v{self.augment.views}-{digest}"
