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


def featcache(*commands, path=(SRC, DIST)) -> list[dict]:
    """Run CLI commands in ONE fresh process whose sys.path holds ``path`` (the plugin) and nothing
    of this one; each result has exit_code, stdout, stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path)), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmds = [[str(a) for a in c] for c in commands]
    proc = subprocess.run([sys.executable, str(PLUGIN / "run_cli.py"), json.dumps(cmds)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def ok(result: dict) -> dict:
    assert result["exit_code"] == 0, f"featcache {' '.join(result['args'])}: {result['stderr'][-3000:]}"
    return result


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    """Process 1: extract with the plugin backbone. Process 2: fit heads, export, predict, sweep."""
    root = tmp_path_factory.mktemp("plugin")
    data = make_tree(root / "data", per_class=6)
    store, run, model = root / "s.zarr", root / "run", root / "m.keras"
    ok(featcache(["extract", data, "--store", store, "-b", "odd_net", "--dtype", "float32", "--augment", "1", "-q"])[0])
    results = featcache(
        ["fit-head", store, "-b", "odd_net", "--head", "logreg", "--out", run, "-q"],
        ["export", run, "--out", model],
        ["predict", model, data, "--json", "--top-k", "0", "-q"],
        ["fit-head", store, "-b", "odd_net", "--head", "centroid", "--shrink", "0.25", "--out", root / "c", "--json",
         "-q"],
        ["sweep", store, "-b", "odd_net", "--head", "centroid", "--shrink", "0,0.5", "--temperature", "1,10", "--json",
         "-q", "--out", root / "sweep"],
        ["fit-head", store, "-b", "odd_net", "--head", "centroid", "--shrink", "2", "--out", root / "bad"],
        ["export", root / "c", "--out", root / "c.keras"],
        ["predict", run, data, "--json", "-q"],
        *(["fit-head", store, "-b", "odd_net", "--head", "centroid", "--shrink", shrink, "--temperature", t, "--json",
           "-q", "--out", root / f"alone-{shrink}-{t}"] for shrink in ("0", "0.5") for t in ("1", "10")),  # each alone
        ["fit-head", "--help"], ["sweep", "--help"], ["heads", "--json"],
    )
    return {"data": data, "store": store, "run": run, "root": root, "results": results}


@pytest.fixture(scope="module")
def without_plugin(plugin_run) -> list[dict]:
    """Process 3, where the plugin package is not installed at all: predict with its run, fit-head --help."""
    return featcache(["predict", plugin_run["run"], plugin_run["data"]], ["fit-head", "--help"], path=())


def test_plugin_preprocessing_is_unlike_every_builtin():
    sys.path.insert(0, str(SRC))
    try:
        from featcache_test_plugin import ODD_PREPROCESS
    finally:
        sys.path.remove(str(SRC))
    assert all((ODD_PREPROCESS.scale, ODD_PREPROCESS.offset) != (p.scale, p.offset) for p in PREPROCESS.values())


def test_store_records_the_plugins_numbers_and_builder(plugin_run):
    with open_store(plugin_run["store"]) as st:
        (key,) = st.keys()
        b = st.config(key).backbone
    assert b.name == "odd_net" and b.builder == "featcache_test_plugin:ODD_NET"
    assert b.preprocess.scale == (1 / 100.0, 1 / 90.0, 1 / 80.0) and b.preprocess.offset == (-1.3, -1.1, -0.9)
    assert b.preprocess.channel_order == "bgr"


def test_plugin_backbone_exports_and_predicts_what_fit_head_computed(plugin_run):
    data, store, run = plugin_run["data"], plugin_run["store"], plugin_run["run"]
    fit, export, predict = (ok(r) for r in plugin_run["results"][:3])
    got = {Path(r["path"]).resolve(): r for r in json.loads(predict["stdout"])}
    # fit-head's own probabilities on the cached view-0 features, computed in this process
    trained = load_run(run)
    with open_store(store) as st:
        fs = st.load(st.keys())
    expected = trained.head.predict_proba(fs.features[:, 0])
    for path, p in zip(fs.paths, expected, strict=True):
        probs = {t["class"]: t["probability"] for t in got[(data / path).resolve()]["top"]}
        np.testing.assert_allclose([probs[c] for c in trained.config.classes], p, atol=1e-4)


def test_a_process_without_the_entry_point_rebuilds_the_backbone_from_the_record(plugin_run, without_plugin):
    """The run's record names the builder: a process that only has the module importable (no
    .dist-info, so no entry point) still predicts; without the package it is a clear error."""
    data, run = plugin_run["data"], plugin_run["run"]
    with_ep = json.loads(ok(plugin_run["results"][7])["stdout"])
    without = json.loads(ok(featcache(["predict", run, data, "--json", "-q"], path=(SRC,))[0])["stdout"])
    assert [r["label"] for r in with_ep] == [r["label"] for r in without]
    gone = without_plugin[0]  # the package is not installed at all
    assert gone["exit_code"] == 2 and "featcache_test_plugin" in gone["stderr"]
    assert "Traceback" not in gone["stderr"]


def test_plugin_head_gets_cli_options_and_trains(plugin_run, without_plugin):
    helps = plugin_run["results"][12:15]
    assert all("--shrink" in ok(h)["stdout"] for h in helps[:2])
    assert "--shrink" not in ok(without_plugin[1])["stdout"]  # not installed
    shrink = next(r for r in json.loads(helps[2]["stdout"]) if r["parameter"] == "shrink")
    assert (shrink["head"], shrink["default"], shrink["allowed"]) == ("centroid", 0.0, ">= 0 and <= 1")
    fit, sweep, bad, export = plugin_run["results"][3:7]
    out = json.loads(ok(fit)["stdout"])
    assert out["head"] == {"type": "centroid", "params": {"temperature": 1.0, "shrink": 0.25}}
    assert out["validation"]["accuracy"] > 0.5
    assert len(json.loads(ok(sweep)["stdout"])["leaderboard"]) == 4
    assert bad["exit_code"] == 2 and "--shrink: must be >= 0 and <= 1, got 2" in bad["stderr"]
    ok(export)  # the plugin head's to_keras, attached to the plugin backbone


def test_plugin_head_trains_inside_a_sweep_group(plugin_run):
    """The centroid head's group_key puts the sweep's four trials in one task, one fit_group call
    fits them all (each trial's metrics.json records which call), and the leaderboard is what
    fitting each configuration alone gives."""
    rows = json.loads(ok(plugin_run["results"][4])["stdout"])["leaderboard"]
    assert len(rows) == 4 and {(r["group"], r["group_size"]) for r in rows} == {(0, 4)}
    fitted_by = [json.loads((Path(r["run_dir"]) / "metrics.json").read_text())["training"]["group"] for r in rows]
    assert fitted_by == [{"call": 1, "size": 4}] * 4
    alone = {}
    for r in plugin_run["results"][8:12]:
        out = json.loads(ok(r)["stdout"])
        assert out["training"] == {}  # fitted alone: no group
        alone[out["head"]["params"]["shrink"], out["head"]["params"]["temperature"]] = out["validation"]
    for r in rows:
        v = alone[r["shrink"], r["temperature"]]
        assert r["val_accuracy"] == v["accuracy"] and r["val_loss"] == pytest.approx(v["log_loss"], rel=1e-9)


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
