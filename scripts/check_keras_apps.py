"""Build every keras.applications backbone featcache registers with random weights at a small input
size and check it against its declaration: feature size, parameter count (what compare's cost
column reads without building), its preprocessing numbers against the module's preprocess_input,
its blocks. CI builds only a representative of each family (tests/test_keras_apps_more.py).

    .venv/bin/python scripts/check_keras_apps.py     # ~2-3 minutes on 2 cores; writes the JSON below
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "keras_apps_check.json"


def main() -> int:
    import keras

    from featcache.backbones import get_backbone, keras_apps
    from featcache.backbones.blocks import backbone_blocks

    rows, failed = [], 0
    x8 = np.random.default_rng(2).integers(0, 256, (2, 7, 7, 3), dtype=np.uint8)
    for name, app in keras_apps._APPS.items():
        spec = get_backbone(name)
        size = max(32, spec.min_input_size)
        t0 = time.perf_counter()
        model = spec.build_features(size, "random")
        built = time.perf_counter() - t0
        out = np.asarray(model(np.full((1, size, size, 3), 127.0, np.float32), training=False))
        ctor = getattr(keras.applications, app.constructor)
        expected = np.asarray(importlib.import_module(ctor.__module__).preprocess_input(x8.astype(np.float32)))
        pre_diff = float(np.abs(spec.preprocess(x8) - expected).max() / max(1.0, np.abs(expected).max()))
        blocks = backbone_blocks(list(model.layers), spec.block_pattern)
        row = {"name": name, "constructor": app.constructor, "built_at": size, "build_seconds": round(built, 1),
               "feature_dim": int(out.shape[-1]), "declared_feature_dim": spec.feature_dim,
               "parameters": model.count_params(), "declared_parameters": spec.parameters,
               "preprocess": spec.preprocess.name, "preprocess_rel_diff": pre_diff, "blocks": len(blocks),
               "top_blocks": [b.name for b in blocks[-3:]]}
        row["ok"] = (row["feature_dim"] == row["declared_feature_dim"] and row["parameters"] == spec.parameters
                     and pre_diff <= 1e-5 and len(blocks) > 4)
        failed += not row["ok"]
        rows.append(row)
        print(f"{name:22s} {size:4d}px {built:5.1f}s dim {row['feature_dim']:5d} params {row['parameters']:>12,} "
              f"pre {pre_diff:.1e} blocks {len(blocks):3d} {'ok' if row['ok'] else 'MISMATCH'}", flush=True)
        del model
        keras.backend.clear_session()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"keras": keras.__version__, "python": sys.version.split()[0],
                               "machine": platform.machine(), "failed": failed, "rows": rows}, indent=1) + "\n")
    print(f"{len(rows) - failed}/{len(rows)} as declared; wrote {OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
