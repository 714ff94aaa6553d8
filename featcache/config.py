"""FeatureConfig: everything one stored features array depends on, and its key in a store."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from .augment import AugmentParams
from .backbones.spec import BackboneConfig

DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class FeatureConfig:
    backbone: BackboneConfig
    augment: AugmentParams = AugmentParams()
    dtype: str = "float16"

    def to_dict(self) -> dict:
        return {"backbone": self.backbone.to_dict(), "augment": self.augment.to_dict(), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        return cls(BackboneConfig(**d["backbone"]), AugmentParams(**d["augment"]), d["dtype"])

    @property
    def key(self) -> str:
        """Readable and unique: e.g. efficientnet_lite0-224-avg-v1-3fa2b9c1."""
        ident = {**self.to_dict(), "backbone": {**asdict(self.backbone), "weights": ""}}
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
        b = self.backbone
        return f"{b.backbone}-{b.input_size}-{b.pooling}-v{self.augment.n_views}-{digest}"
