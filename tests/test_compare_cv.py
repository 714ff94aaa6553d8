"""compare --folds: cross-validated ranking with intervals and paired tests, cost, few-shot
curves, and the self-contained report.html (opened in headless Chromium)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, TINY_SPEC, _build_tiny, make_tree

from featcache.backbones import get_backbone, list_backbones, register_backbone
from featcache.backbones.model import resolve_config
from featcache.cli import cli
from featcache.extraction import ExtractOptions, extract
from featcache.report.cost import backbone_parameters

# the same network under another name: a second configuration with identical features
TWIN = "tiny_twin"
TWIN_SPEC = dataclasses.replace(TINY_SPEC, name=TWIN, reference="test_compare_cv:TWIN_SPEC")
BLIND = "tiny_blind"


def _build_blind(size: int, weights: str):
    """tiny_test fed black images: real extraction whose features carry nothing (every image alike)."""
    import keras

    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, _build_tiny(size, weights)(keras.layers.Rescaling(0.0)(inputs)), name=BLIND)


BLIND_SPEC = dataclasses.replace(TINY_SPEC, name=BLIND, build_features=_build_blind,
                                 reference="test_compare_cv:BLIND_SPEC")
for _spec in (TWIN_SPEC, BLIND_SPEC):
    if _spec.name not in {s.name for s in list_backbones()}:
        register_backbone(_spec)


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def twin_store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cv")
    data = make_tree(root / "data", per_class=10)
    extract(data, root / "s.zarr", ExtractOptions(backbones=[TINY, TWIN, BLIND], weights="random", progress=False))
    return root / "s.zarr"


@pytest.fixture(scope="module")
def twin_report(twin_store, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("cv_out") / "report"
    r = _run("compare", twin_store, "--folds", 5, "--shots", "1,3,all", "--out", out, "-q", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), out


def _backbone(row: dict) -> str:
    return row["backbone"]


def test_clearly_better_config_ranks_first_with_separate_intervals(twin_report):
    result, _ = twin_report
    board = result["leaderboard"]
    assert sorted(_backbone(r) for r in board[:2]) == [TINY, TWIN] and _backbone(board[2]) == BLIND
    best, blind = board[0]["intervals"]["accuracy"], board[2]["intervals"]["accuracy"]
    assert blind["high"] < best["low"]  # non-overlapping 95% intervals
    assert board[2]["vs_best_test"]["significant"] and board[2]["vs_best"].startswith("p=")


def test_identical_configs_are_not_significantly_different(twin_report, twin_store):
    result, out = twin_report
    board = result["leaderboard"]
    a, b = board[:2]
    assert a["intervals"] == b["intervals"] and a["fold_accuracy"] == b["fold_accuracy"]
    assert a["vs_best"] == "best" and b["vs_best"].startswith("n.s.")
    assert b["vs_best_test"]["p_value"] == 1.0 and not result["pairs"][0]["significant"]
    assert "n.s." in b["vs_best"]
    acc = a["intervals"]["accuracy"]
    assert acc["low"] <= acc["mean"] <= acc["high"] and result["folds"] == 5
    assert "Nadeau-Bengio" in result["interval"]
    # cost and curves: extraction speed from the store's stats, the tiny net's 1,376 weights
    assert a["views_per_s"] > 0 and a["feature_dim"] == 16 and a["backbone_params"] == 8 * 27 + 8 + 16 * 72 + 16
    assert list(a["shots"]) == ["1", "3", "all"] == result["shots"]
    assert a["shots"]["all"] == acc
    # the test split was scored once, by the winner only
    assert result["winner_test"]["key"] == a["key"] and result["winner_test"]["n"] > 0
    assert {p.name for p in out.iterdir()} >= {"report.html", "compare.csv", "compare.json", "compare.png",
                                               "cost.png", "shots.png"}
    # same seed, same folds, same numbers (human table this time)
    r = _run("compare", twin_store, "--folds", 5, "-b", TINY, "-b", TWIN, "-q")
    assert r.exit_code == 0 and "n.s. p=1" in r.stdout and f"{acc['mean']:.3f} [{acc['low']:.3f}" in r.stdout


def test_folds_are_capped_at_the_smallest_class(twin_store):
    r = _run("compare", twin_store, "--folds", 50, "-b", TINY, "-q", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["folds"] < 50 and "50 folds asked" in out["note"]


@pytest.mark.parametrize("args, message", [
    (["--folds", 1], "--folds: needs at least 2 folds"),
    (["--folds", 3, "--shots", "1,x"], "--shots: expected whole numbers"),
    (["--shots", "1,all"], "--folds: shots and repeats need cross-validation"),
    (["--folds", 3, "--repeats", 0], "--repeats: needs at least 1"),
])
def test_bad_input_exits_2(twin_store, args, message):
    r = _run("compare", twin_store, *args, "-q")
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output


def _cells(dom: str) -> list[dict]:
    """The leaderboard table's rows, column -> text, from the rendered DOM."""
    table = dom.split("<table>", 1)[1].split("</table>", 1)[0]
    return [dict(re.findall(r'data-col="([^"]+)">([^<]*)</td>', tr)) for tr in table.split("<tr>")[2:]]


def test_report_opens_in_headless_chromium(twin_report, tmp_path):
    result, out = twin_report
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it with apt-get when run as root)")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
         "--dump-dom", (out / "report.html").as_uri()], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not re.search(r"Uncaught|SyntaxError|TypeError|ReferenceError", proc.stderr), proc.stderr[-2000:]
    dom = proc.stdout
    assert "featcache compare report (3 entries)" in dom  # the page's script ran to its end
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), float)
    assert pixels.std() > 5  # not blank
    rows = _cells(dom)
    for row, entry in zip(rows, result["leaderboard"], strict=True):
        for col in ("accuracy", "accuracy_low", "accuracy_high", "log_loss", "macro_f1_high", "views_per_s"):
            assert float(row[col]) == entry[col], col
        assert row["key"] == entry["key"] and row["vs_best"] == entry["vs_best"]


def test_a_declared_parameter_count_is_read_not_built(tmp_path, monkeypatch):
    """test_backbones checks each declared count against its network."""
    monkeypatch.setenv("FEATCACHE_DATA", str(tmp_path / "data"))  # the count cache beside it
    for name in ("vgg19", "efficientnet_lite0"):
        assert backbone_parameters(resolve_config(name, weights="random")) == get_backbone(name).parameters
    assert not (tmp_path / "backbone_params.json").exists(), "nothing was built to count"
