"""Plugins through entry points, seen by fresh processes: a backbone whose preprocessing numbers
differ from every built-in goes extract -> fit-head -> export -> predict from the CLI, and a head
added by a package gets its own fit-head/sweep options without any CLI edit.

The plugin is tests/plugins: its module under src/, its .dist-info (entry points) under dist/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tree

from featcache.backbones import PREPROCESS, BackboneSpec
from featcache.errors import FeatcacheError, RegistryError
from featcache.registry import Registry
from featcache.stores import open_store
from featcache.train.run import load_run

PLUGIN = Path(__file__).parent / "plugins"
SRC, DIST = PLUGIN / "src", PLUGIN / "dist"


def featcache(*args, path=(SRC, DIST), check=True) -> subprocess.CompletedProcess:
    """The CLI in a fresh process whose sys.path holds ``path`` (the plugin) and nothing of this one."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path)), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "featcache", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"featcache {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    """extract -> fit-head with the plugin backbone, each in its own process."""
    root = tmp_path_factory.mktemp("plugin")
    data = make_tree(root / "data", per_class=6)
    store, run = root / "s.zarr", root / "run"
    featcache("extract", data, "--store", store, "-b", "odd_net", "--dtype", "float32", "--augment", "1", "-q")
    featcache("fit-head", store, "-b", "odd_net", "--head", "logreg", "--out", run, "-q")
    return data, store, run


def test_plugin_preprocessing_is_unlike_every_builtin():
    sys.path.insert(0, str(SRC))
    try:
        from featcache_test_plugin import ODD_PREPROCESS
    finally:
        sys.path.remove(str(SRC))
    assert all((ODD_PREPROCESS.scale, ODD_PREPROCESS.offset) != (p.scale, p.offset) for p in PREPROCESS.values())


def test_store_records_the_plugins_numbers_and_builder(plugin_run):
    _, store, _ = plugin_run
    with open_store(store) as st:
        (key,) = st.keys()
        b = st.config(key).backbone
    assert b.name == "odd_net" and b.builder == "featcache_test_plugin:ODD_NET"
    assert b.preprocess.scale == (1 / 100.0, 1 / 90.0, 1 / 80.0) and b.preprocess.offset == (-1.3, -1.1, -0.9)
    assert b.preprocess.channel_order == "bgr"


def test_plugin_backbone_exports_and_predicts_what_fit_head_computed(plugin_run, tmp_path):
    data, store, run = plugin_run
    model = tmp_path / "m.keras"
    featcache("export", run, "--out", model)
    got = {Path(r["path"]).resolve(): r for r in json.loads(
        featcache("predict", model, data, "--json", "--top-k", "0", "-q").stdout)}
    # fit-head's own probabilities on the cached view-0 features, computed in this process
    head = load_run(run).head
    with open_store(store) as st:
        fs = st.load(st.keys())
    expected = head.predict_proba(fs.features[:, 0])
    classes = load_run(run).config.classes
    for path, p in zip(fs.paths, expected, strict=True):
        probs = {t["class"]: t["probability"] for t in got[(data / path).resolve()]["top"]}
        np.testing.assert_allclose([probs[c] for c in classes], p, atol=1e-4)


def test_a_process_without_the_entry_point_rebuilds_the_backbone_from_the_record(plugin_run):
    """The run's record names the builder: a process that only has the module importable (no
    .dist-info, so no entry point) still predicts."""
    data, _, run = plugin_run
    with_ep = json.loads(featcache("predict", run, data, "--json", "-q").stdout)
    without = json.loads(featcache("predict", run, data, "--json", "-q", path=(SRC,)).stdout)
    assert [r["label"] for r in with_ep] == [r["label"] for r in without]
    gone = featcache("predict", run, data, path=(), check=False)  # the package is not installed at all
    assert gone.returncode == 2 and "featcache_test_plugin" in gone.stderr and "Traceback" not in gone.stderr


def test_plugin_head_gets_cli_options_and_trains(plugin_run, tmp_path):
    _, store, _ = plugin_run
    for command in ("fit-head", "sweep"):
        assert "--shrink" in featcache(command, "--help").stdout
    assert "--shrink" not in featcache("fit-head", "--help", path=()).stdout  # not installed: not offered
    listed = json.loads(featcache("heads", "--json").stdout)
    assert {"head": "centroid", "parameter": "shrink"}.items() <= next(
        r for r in listed if r["parameter"] == "shrink").items()
    out = json.loads(featcache("fit-head", store, "-b", "odd_net", "--head", "centroid", "--shrink", "0.25",
                               "--out", tmp_path / "c", "--json", "-q").stdout)
    assert out["head"] == {"type": "centroid", "params": {"temperature": 1.0, "shrink": 0.25}}
    assert out["validation"]["accuracy"] > 0.5
    sweep = json.loads(featcache("sweep", store, "-b", "odd_net", "--head", "centroid", "--shrink", "0,0.5",
                                 "--temperature", "1,10", "--json", "-q").stdout)
    assert len(sweep["leaderboard"]) == 4
    bad = featcache("fit-head", store, "-b", "odd_net", "--head", "centroid", "--shrink", "2", "--out",
                    tmp_path / "bad", check=False)
    assert bad.returncode == 2 and "--shrink: must be >= 0 and <= 1, got 2" in bad.stderr
    model = tmp_path / "c.keras"
    featcache("export", tmp_path / "c", "--out", model)  # the plugin head's to_keras, in a fresh process


# -- the registry's rules, in this process -----------------------------------------------------------

def _spec(name: str, dim: int = 4) -> BackboneSpec:
    return BackboneSpec(name=name, input_size=32, feature_dim=dim, preprocess=PREPROCESS["tf"],
                        build_features=lambda size, weights: None, weights_source="none")


def _registry(tmp_path: Path, monkeypatch, entry_points: str) -> Registry:
    """A registry of its own entry-point group, fed by a distribution written into tmp_path."""
    dist = tmp_path / "fake_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(entry_points)
    (tmp_path / "fake_plugin.py").write_text(
        "from featcache.backbones import BackboneSpec, PREPROCESS\n"
        "def _spec(name):\n"
        "    return BackboneSpec(name=name, input_size=32, feature_dim=4, preprocess=PREPROCESS['tf'],\n"
        "                        build_features=lambda size, weights: None, weights_source='none')\n"
        "ONE = _spec('one')\nMANY = [_spec('two'), _spec('three')]\n"
        "def make():\n    return _spec('four')\n"
        "CLASH = _spec('builtin_name')\n"
        "raise_on_import = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return Registry("backbone", "featcache.test_group", lambda o: isinstance(o, BackboneSpec))


def test_entry_points_may_name_an_item_a_list_or_a_factory(tmp_path, monkeypatch):
    reg = _registry(tmp_path, monkeypatch, "[featcache.test_group]\na = fake_plugin:ONE\nb = fake_plugin:MANY\n"
                                           "c = fake_plugin:make\n")
    assert reg.names() == ["four", "one", "three", "two"]
    with pytest.raises(FeatcacheError, match="unknown backbone 'five'; known: four, one, three, two"):
        reg.get("five")


def test_a_plugin_clashing_with_a_registered_name_is_an_error_naming_both(tmp_path, monkeypatch):
    reg = _registry(tmp_path, monkeypatch, "[featcache.test_group]\nx = fake_plugin:CLASH\n")
    reg.register(_spec("builtin_name"), origin="featcache")
    with pytest.raises(RegistryError, match="'builtin_name' is already registered \\(by featcache\\)"):
        reg.names()


def test_a_broken_plugin_is_named_in_the_error(tmp_path, monkeypatch):
    reg = _registry(tmp_path, monkeypatch, "[featcache.test_group]\nx = fake_plugin:NO_SUCH_THING\n")
    with pytest.raises(RegistryError, match="fake_plugin:NO_SUCH_THING.*fake-plugin.*AttributeError"):
        reg.names()
