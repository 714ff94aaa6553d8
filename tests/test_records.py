"""Records, not names: what a store or run folder records rebuilds the same computation; older
records keep working; head parameters are declared once; the library's parameter errors are worded
with the CLI's flags only by the CLI."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from conftest import TINY, make_tree

from featcache.backbones import get_backbone
from featcache.backbones.model import resolve_config
from featcache.backbones.spec import BackboneConfig, Preprocess
from featcache.cli import cli
from featcache.config import FeatureConfig
from featcache.errors import FeatcacheError, ParameterError
from featcache.extraction import ExtractOptions, extract
from featcache.heads import HEADS, LogRegHead, MLPHead, clone, make_head
from featcache.ingest.augment import AugmentParams
from featcache.serve.predict import load_classifier
from featcache.stores import open_store
from featcache.train.compare import CompareEntry, rank_key
from featcache.train.fit import fit_head


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    data = make_tree(root / "data", per_class=8)
    store = root / "s.zarr"
    extract(data, store, ExtractOptions(backbones=[TINY], weights="random", dtype="float32",
                                        augment=AugmentParams(augmented_views=1), progress=False))
    return data, store


# -- the records -----------------------------------------------------------------------------------

def test_backbone_record_round_trips_with_numbers_not_names():
    config = resolve_config("resnet50", weights="random")
    d = json.loads(json.dumps(config.to_dict()))
    assert d["preprocess"] == {"name": "caffe", "scale": [1.0] * 3, "offset": [-103.939, -116.779, -123.68],
                               "channel_order": "bgr"}
    assert d["builder"] == "featcache.backbones.keras_apps:SPECS"
    assert BackboneConfig.from_dict(d) == config


def test_a_builtin_name_with_other_numbers_is_another_feature_config():
    """The store key cannot confuse two preprocessings that share a name."""
    a = FeatureConfig(resolve_config(TINY, weights="random"))
    other = Preprocess("tf", (1 / 100.0,) * 3, (-1.0,) * 3)
    b = FeatureConfig(BackboneConfig(**{**a.backbone.__dict__, "preprocess": other}))
    assert a.key != b.key and a.identity() != b.identity()


def test_identity_ignores_where_weights_and_code_live():
    a = resolve_config(TINY, weights="random")
    moved = BackboneConfig(**{**a.__dict__, "builder": "elsewhere:SPEC", "weights": "/other/path"})
    assert FeatureConfig(a).key == FeatureConfig(moved).key


@pytest.mark.parametrize("bad", [
    {"scale": (1.0, 1.0)}, {"offset": (0.0, math.nan, 0.0)}, {"channel_order": "grb"},
])
def test_preprocess_refuses_malformed_numbers(bad):
    with pytest.raises(ParameterError, match="preprocess"):
        Preprocess("x", **bad)


def _downgrade_to_0_1(config: dict) -> dict:
    """A FeatureConfig dict as featcache 0.1 wrote it: names only."""
    b = dict(config["backbone"])
    b["backbone"] = b.pop("name")
    b["preprocess"] = b["preprocess"]["name"]
    b.pop("builder")
    augment = dict(config["augment"])
    augment["views"] = augment.pop("augmented_views")
    return {"backbone": b, "augment": augment, "dtype": config["dtype"]}


def test_stores_and_runs_of_featcache_0_1_keep_working(tiny, tmp_path):
    """0.1 recorded the preprocessing by name: the numbers are filled in from the built-in table,
    a resumed extract reuses every row, and a 0.1 run folder still predicts the same."""
    data, store = tiny
    run = tmp_path / "run"
    fit_head(store, [TINY], "logreg", run, progress=False)
    images = sorted(str(p) for p in data.rglob("*.png"))
    before = [p.probabilities for p in load_classifier(run).predict(images)]

    old = tmp_path / "old.zarr"
    shutil.copytree(store, old)
    with open_store(old, "a") as st:
        (key,) = st.keys()
        st.backend.set_attrs(f"features/{key}", {"config": _downgrade_to_0_1(st.config(key).to_dict())})
    del zarr.open_group(str(old / "features" / key), mode="r+").attrs["record_digest"]  # 0.1 wrote none
    with open_store(old) as st:
        assert st.config(key).backbone.preprocess == get_backbone(TINY).preprocess
    again = extract(data, old, ExtractOptions(backbones=[TINY], weights="random", dtype="float32",
                                              augment=AugmentParams(augmented_views=1), progress=False))
    assert [(c.key, c.extracted, c.reused) for c in again.configs] == [(key, 0, 24)]

    config = json.loads((run / "config.json").read_text())
    config.pop("integrity")  # 0.1 wrote none
    config["features"] = [_downgrade_to_0_1(f) for f in config["features"]]
    (run / "config.json").write_text(json.dumps(config))
    after = [p.probabilities for p in load_classifier(run).predict(images)]
    np.testing.assert_allclose(after, before, atol=1e-6)


def test_a_0_1_record_with_an_unknown_preprocessing_name_asks_to_re_extract():
    with pytest.raises(FeatcacheError, match="re-extract"):
        Preprocess.from_dict("my_lab_mode")


def test_a_changed_weights_file_is_refused_not_used(tmp_path):
    from featcache.backbones.model import build_feature_extractor

    weights = tmp_path / "w.bin"
    weights.write_bytes(b"one")
    config = resolve_config(TINY, weights=str(weights))
    weights.write_bytes(b"two")
    with pytest.raises(FeatcacheError, match="changed since the features were extracted"):
        build_feature_extractor(config)
    weights.unlink()
    with pytest.raises(FeatcacheError, match="no longer exists"):
        build_feature_extractor(config)


# -- heads: parameters declared once, scikit-learn rules -------------------------------------------

def test_head_parameters_come_from_their_declarations():
    head = MLPHead(hidden=32)
    assert head.get_params() == {p.name: (32 if p.name == "hidden" else p.default) for p in MLPHead.parameters}
    assert make_head("linear").dropout == 0.4 and make_head("mlp").dropout == 0.5
    with pytest.raises(ParameterError, match="head 'mlp' has no parameter 'C'"):
        head.set_params(C=1.0)
    with pytest.raises(ParameterError, match="dropout: must be >= 0 and < 1, got 1"):
        head.set_params(dropout=1.0)
    with pytest.raises(ParameterError, match="optimizer: must be one of adam, rmsprop, sgd"):
        MLPHead(optimizer="adagrad")
    with pytest.raises(ParameterError, match="hidden: expected integer"):
        MLPHead(hidden=2.5)
    assert head.hidden == 32  # a refused set_params changes nothing


def test_clone_copies_parameters_not_learned_state():
    X = np.random.default_rng(0).normal(size=(30, 1, 4)).astype(np.float32)
    y = np.arange(30) % 3
    fitted = LogRegHead(C=0.5).fit(X, y)
    assert list(fitted.classes_) == [0, 1, 2] and fitted.n_classes_ == 3
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params() and not hasattr(copy, "coef_")


def test_every_registered_head_declares_typed_parameters():
    for cls in HEADS:
        assert cls.parameters or cls.name == "ensemble", cls.name  # an ensemble is made of other heads
        head = cls()
        for p in cls.parameters:
            assert p.validate(p.default) == getattr(head, p.name)


# -- the CLI words library errors as its flags -----------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--batch-size", "0"], "--batch-size: must be from 1 to"),
    (["--augment", "-1"], "--augment: must be a whole number, 0 or more"),
    (["--zoom", "1.5"], "--zoom: must be below 1"),
    (["--rotation", "nan"], "--rotation: must be a finite number"),
    (["--shift", "inf"], "--shift: must be a finite number"),
    (["--channel-shift", "-2"], "--channel-shift: must be a finite number, 0 or more"),
    (["--image-size", "100000"], "--image-size: tiny_test takes input sizes from 32 to 2048"),
    (["--split", "0/0/0"], "--split: invalid split"),
    (["--workers", "0"], "--workers: must be at least 1"),
])
def test_extract_errors_name_the_flag(tmp_path, args, message):
    data = make_tree(tmp_path / "data", per_class=2)
    r = CliRunner().invoke(cli, ["extract", str(data), "--store", str(tmp_path / "s.zarr"), "-b", TINY,
                                 "--weights", "random", *args])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output


def test_fit_head_errors_name_the_flag(tiny, tmp_path):
    _, store = tiny
    r = CliRunner().invoke(cli, ["fit-head", str(store), "-b", TINY, "--head", "logreg", "--dropout", "0.3",
                                 "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "--dropout: head 'logreg' has no parameter 'dropout'" in r.output
    r = CliRunner().invoke(cli, ["fit-head", str(store), "-b", TINY, "--head", "mlp", "--dropout", "1.5",
                                 "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "--dropout: must be >= 0 and < 1, got 1.5" in r.output


def test_library_messages_do_not_speak_cli():
    """Parameter errors raised by the library name its own parameters; flags are the CLI's business."""
    with pytest.raises(ParameterError) as e:
        ExtractOptions(batch_size=0)
    assert e.value.param == "batch_size" and "--" not in str(e.value)


# -- the records between stages are frozen --------------------------------------------------------

def test_the_records_architecture_md_lists_are_frozen_dataclasses():
    import dataclasses
    import importlib
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "ARCHITECTURE.md").read_text()
    table = text.split("## The records that flow between stages", 1)[1].split("\n\n", 2)[1]
    checked = []
    for row in table.splitlines()[2:]:
        names, where = (re.findall(r"`([^`]+)`", cell) for cell in row.split("|")[1:3])
        folder = where[0].rsplit("/", 1)[0] + "/" if "/" in where[0] else ""
        modules = [importlib.import_module("featcache." + (w if "/" in w else folder + w)[:-3].replace("/", "."))
                   for w in where]
        for name in names:
            cls = next((getattr(m, name) for m in modules if hasattr(m, name)), None)
            assert cls is not None, f"ARCHITECTURE.md: {name} is not in {', '.join(where)}"
            assert dataclasses.is_dataclass(cls), name
            assert cls.__dataclass_params__.frozen, f"{name} is listed as a frozen record but is mutable"
            checked.append(name)
    assert len(checked) >= 15, checked  # the table parsed


# -- compare ranks on validation only --------------------------------------------------------------

def test_compare_never_breaks_ties_with_test_accuracy():
    def entry(test, seconds, loss=0.3):
        return CompareEntry(key="k", backbone="b", head="h", val_accuracy=0.9, val_loss=loss, test_accuracy=test,
                            fit_seconds=seconds, views_per_s=None, feature_dim=4)

    entries = [entry(0.99, 2.0), entry(0.50, 1.0), entry(1.0, 0.5, loss=0.4)]
    ranked = sorted(entries, key=rank_key)
    assert [e.test_accuracy for e in ranked] == [0.50, 0.99, 1.0]  # loss, then fit time; never test
