"""Heads on stores larger than the memory budget: features streamed from the store, verified."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from synthetic_store import write_synthetic_store

from featcache.cli import cli
from featcache.errors import ParameterError
from featcache.heads import make_head
from featcache.stores import StoreDamagedError, open_store
from featcache.train.fit import fit_head, load_training_data
from featcache.train.memory import parse_size

BACKBONE = "efficientnet_lite0"  # the synthetic store's record (its features are synthetic)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """8,000 images x 2 views x 64 dims in chunks of 256 rows: fits in memory, or streams in many windows."""
    path = tmp_path_factory.mktemp("stream") / "s.zarr"
    write_synthetic_store(path, 8000, 64, views=2, n_classes=4, separation=0.5, chunk_rows=256)
    return path


@pytest.mark.parametrize(("text", "expected"), [("512MB", 512 << 20), ("2GB", 2 << 30), ("1.5GiB", 3 << 29),
                                                 ("300000", 300000), ("64 kb", 64 << 10)])
def test_memory_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1GB", "0", "2XB"])
def test_bad_memory_size_names_the_parameter(text):
    with pytest.raises(ParameterError, match="memory_limit: .*(size such as 512MB|more than 0)"):
        parse_size(text)


def test_cli_words_a_bad_memory_limit_as_its_flag(small_store, tmp_path):
    r = CliRunner().invoke(cli, ["fit-head", str(small_store), "-b", BACKBONE, "--head", "logreg", "--out",
                                 str(tmp_path / "run"), "--memory-limit", "lots"])
    assert r.exit_code == 2 and "--memory-limit: expected a size such as 512MB or 2GB, got 'lots'" in r.output


def test_in_memory_stays_the_default_when_the_features_fit(small_store):
    data = load_training_data(small_store, [BACKBONE])
    assert isinstance(data.X_train, np.ndarray) and not data.memory.streamed


def test_streamed_epochs_are_seeded_shuffled_and_full(small_store):
    data = load_training_data(small_store, [BACKBONE], memory_limit="1MB")
    try:
        stream = data.X_train
        assert data.memory.streamed and stream.window_chunks >= 1 and len(stream.groups) > 10
        epochs = [stream.epoch(seed=3, epoch=e, batch_size=64) for e in (0, 0, 1)]
        batches = [list(it) for _, it in epochs]
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches[0], batches[1], strict=True))  # replays
        np.testing.assert_array_equal(epochs[0][0], epochs[1][0])
        assert not np.array_equal(epochs[0][0], epochs[2][0])  # new views each epoch
        labels = np.concatenate([y for _, y in batches[0]])
        assert sorted(labels.tolist()) == sorted(data.y_train.tolist())  # every image once
        assert [len(x) for x, _ in batches[0][:-1]] == [64] * (len(batches[0]) - 1)  # full batches across windows
        assert batches[0][0][0].dtype == np.float32
        stored = data.store.load([BACKBONE])  # the streamed rows are the stored ones
        first = np.concatenate([x for x, _ in batches[0]])
        assert {tuple(np.round(r, 2)) for r in first[:50]} <= {tuple(np.round(r, 2)) for r in
                                                               stored.features[stored.splits == 0].reshape(-1, 64)}
    finally:
        data.close()


def test_streamed_fits_match_the_in_memory_fits(small_store):
    for head, params in (("mlp", {"epochs": 6, "patience": 6, "batch_size": 128}),
                         ("logreg", {"c_grid": [0.01, 0.1, 1.0]})):
        mem = fit_head(small_store, [BACKBONE], make_head(head, params), progress=False)
        streamed = fit_head(small_store, [BACKBONE], make_head(head, params), progress=False, memory_limit="1MB")
        assert streamed.memory.streamed and not mem.memory.streamed
        assert abs(streamed.test.accuracy - mem.test.accuracy) <= 0.01, (head, streamed.test, mem.test)
        assert abs(streamed.val.accuracy - mem.val.accuracy) <= 0.01
        if head == "logreg":  # scikit-learn in memory, the stacked L-BFGS when streamed: a C as good
            assert streamed.summary["solver"] == "lbfgs" and mem.summary["solver"] == "sklearn"
            by_c = {row["C"]: row["val_accuracy"] for row in mem.summary["grid"]}
            assert by_c[streamed.summary["C"]] >= max(by_c.values()) - 0.01


def test_a_damaged_row_is_refused_when_streaming(tmp_path):
    path = tmp_path / "d.zarr"
    key = write_synthetic_store(path, 600, 16, views=2, n_classes=3, chunk_rows=64)
    with open_store(path, "a") as st:
        g = f"features/{key}/features"
        row = st.backend.read(g, slice(70, 71))
        st.backend.write(g, slice(70, 71), row + 1)  # bytes changed behind the checksums
    data = load_training_data(path, [BACKBONE], memory_limit="16KB")
    try:
        with pytest.raises(StoreDamagedError, match="damaged for 1 image"):
            for _ in data.X_train.blocks():
                pass
    finally:
        data.close()


# -- peak memory: 100,000 images, a quarter of their float32 size as the budget -------------------

ROWS, DIM = 100_000, 256
SLACK_MB = 100  # allocator and thread arenas, zarr's decompression buffers, Python objects of a fit

CHILD = textwrap.dedent("""
    import json, os, resource, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import keras
    from featcache.heads import make_head
    from featcache.train.fit import fit_head
    from featcache.stores import open_store
    store, limit, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    head = make_head("mlp", {"epochs": 1, "patience": 1, "batch_size": 256})
    # Baseline: TensorFlow, a head of the same shape with one training step, the store's image list
    m = head._build((dim,), 10)
    m.compile(optimizer="adam", loss="categorical_crossentropy")
    m.train_on_batch(np.zeros((256, dim), np.float32), np.eye(10, dtype=np.float32)[np.zeros(256, int)])
    with open_store(store) as st:
        st[st.resolve_key("efficientnet_lite0")].manifest_rows(st.manifest())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = fit_head(store, ["efficientnet_lite0"], head, progress=False, memory_limit=limit)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_kb": base, "peak_kb": peak, "streamed": r.memory.streamed, "test": r.test.accuracy}))
""")


def test_peak_memory_of_a_streamed_fit_stays_under_the_budget(tmp_path):
    path = tmp_path / "big.zarr"
    write_synthetic_store(path, ROWS, DIM, views=1, n_classes=10, separation=0.5)
    limit = ROWS * DIM * 4 // 4  # a quarter of the features as float32 (25.6 MB of 102 MB)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(limit), str(DIM)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    grown_mb = (out["peak_kb"] - out["base_kb"]) / 1024
    assert out["streamed"] and out["test"] > 0.5
    print(f"baseline {out['base_kb'] / 1024:.0f} MB, peak {out['peak_kb'] / 1024:.0f} MB, limit {limit / 2**20:.1f} MB")
    assert grown_mb <= limit / 2**20 + SLACK_MB, f"peak grew {grown_mb:.0f} MB over the baseline"
