"""A multi-label run exported as .tflite gives the run folder's per-class (sigmoid) probabilities
and label sets (issue 22 point 2). Its own file: the TFLite converter alone takes ~15 s."""

from __future__ import annotations

import csv
import json

import numpy as np
from click.testing import CliRunner
from conftest import TINY, make_image

from featcache.cli import cli


def test_tflite_export_of_a_multilabel_run_matches_the_run_folder(tmp_path):
    data = tmp_path / "d"
    names = ("cat", "dog", "owl")
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "labels"])
        for i in range(18):
            has = [n for j, n in enumerate(names) if (i >> j) & 1] or ["owl"]
            make_image(data / f"im{i:02d}.png", [200 if n in has else 30 for n in names], i)
            w.writerow([f"im{i:02d}.png", "|".join(has)])
    store, run, model = tmp_path / "s.zarr", tmp_path / "run", tmp_path / "m.tflite"
    for args in (["extract", str(data), "--store", str(store), "-b", TINY, "--weights", "random", "--labels",
                  str(tmp_path / "labels.csv"), "--split", "60/40/0"],
                 ["fit-head", str(store), "--head", "logreg", "--out", str(run)],
                 ["export", str(run), "--out", str(model)]):
        r = CliRunner().invoke(cli, [*args, "-q"])
        assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m.tflite.labels.json").read_text())["multilabel"] is True
    files = [str(p) for p in sorted(data.iterdir())[:5]]
    a, b = (json.loads(CliRunner().invoke(cli, ["predict", str(m), *files, "--json", "-q"]).output)
            for m in (run, model))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose([x["probabilities"][n] for n in names], [y["probabilities"][n] for n in names],
                                   atol=1e-4)
        assert x["labels"] == y["labels"]
