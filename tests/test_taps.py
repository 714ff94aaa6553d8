"""Feature taps (`extract --taps`): the pooled output of a block of the backbone, cached as a feature
configuration of its own beside the final one, and used downstream like any other."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, extract_cli, make_tree

from featcache.backbones import get_backbone
from featcache.backbones.model import build_feature_extractor, resolve_config
from featcache.backbones.spec import BackboneConfig
from featcache.cli import cli
from featcache.config import FeatureConfig
from featcache.errors import ParameterError
from featcache.finetune import fine_tune
from featcache.ingest.decode import read_image
from featcache.report.cost import backbone_parameters
from featcache.serve.export import export
from featcache.serve.predict import load_classifier
from featcache.stores import open_store
from featcache.train.fit import fit_head
from featcache.train.run import load_run

LITE0, SIZE = "efficientnet_lite0", 64
TAP, TAP_LAYER = "block4", "block4_add"  # lite0's block 4 (28x28x40 at 224) ends with its residual add


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _configs(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["configs"]


def test_untapped_keys_and_records_are_as_before_taps():
    final = resolve_config(LITE0)
    # keys computed by featcache before taps existed: stores written then must still be found
    assert FeatureConfig(final).key == "efficientnet_lite0-224-avg-v1-35dacf38"
    assert FeatureConfig(resolve_config(LITE0, SIZE), dtype="float32").key == "efficientnet_lite0-64-avg-v1-1e9928a8"
    assert "tap" not in final.to_dict() and "tap" not in FeatureConfig(final).identity()["backbone"]
    tapped = replace(final, tap=TAP)
    assert FeatureConfig(tapped).key.startswith("efficientnet_lite0.block4-224-avg-v1-")
    assert FeatureConfig(tapped).key[-8:] != FeatureConfig(final).key[-8:]  # the digest sees the tap
    assert BackboneConfig.from_dict(tapped.to_dict()) == tapped
    assert (final.label, tapped.label) == (LITE0, "efficientnet_lite0.block4")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """The tiny backbone and its first convolution extracted twice with the CLI: the second run resumes."""
    root = tmp_path_factory.mktemp("taps")
    data, store = make_tree(root / "data", per_class=6), root / "s.zarr"
    args = ("extract", data, "--store", store, "-b", TINY, "--weights", "random", "--taps", "conv1", "-q", "--json")
    return {"root": root, "store": store, "runs": [_configs(_run(*args)) for _ in range(2)]}


def test_tiny_extracts_the_final_config_and_the_tap_then_reuses_both(tiny):
    first, again = tiny["runs"]
    assert [(c["backbone"], c["extracted"]) for c in first] == [(TINY, 18), (f"{TINY}.conv1", 18)]
    assert [(c["key"], c["extracted"], c["reused"]) for c in again] == [(c["key"], 0, 18) for c in first]
    with open_store(tiny["store"]) as st:
        # a backbone name alone still means its final features; name.tap the tap
        assert [st.resolve_key(n) for n in (TINY, f"{TINY}.conv1")] == [c["key"] for c in first]
        assert st.load([TINY]).features.shape[-1] == 16 and st.load([f"{TINY}.conv1"]).features.shape[-1] == 8


def test_taps_share_the_final_features_pass_and_give_the_numbers_of_their_own(tiny, monkeypatch):
    """One run with --taps builds one network for the final features and the tap; a tap extracted
    later, on its own (its final features already there), gets the same numbers bit for bit."""
    from featcache.extraction import ExtractOptions, extract, runner

    built = []
    monkeypatch.setattr(runner, "_build_model", lambda *a, _build=runner._build_model: built.append(a) or _build(*a))
    data, alone = tiny["root"] / "data", tiny["root"] / "alone.zarr"
    options = {"backbones": [TINY], "weights": "random", "progress": False}
    extract(data, alone, ExtractOptions(**options))
    result = extract(data, alone, ExtractOptions(**options, taps="conv1"))
    assert [(c.backbone, c.extracted) for c in result.configs] == [(TINY, 0), (f"{TINY}.conv1", 18)]
    assert [a[0].tap for a in built] == ["", "conv1"]  # two runs, one network each
    with open_store(tiny["store"]) as st, open_store(alone) as st2:
        for name in (TINY, f"{TINY}.conv1"):
            np.testing.assert_array_equal(st.load([name]).features, st2.load([name]).features)
    built.clear()
    shutil.rmtree(alone)
    extract(data, alone, ExtractOptions(**options, taps="conv1"))
    assert len(built) == 1 and [c.tap for c in built[0][2]] == ["conv1"]  # one network for both


def test_a_flattened_tap_has_the_blocks_whole_output(tmp_path):
    configs = _configs(extract_cli(tmp_path, "--pooling", "flatten", "--taps", "conv1", "--json"))
    with open_store(tmp_path / "s.zarr") as st:
        assert st.load([configs[1]["key"]]).features.shape[-1] == 16 * 16 * 8  # conv1: 16x16x8 at 32 px


def test_an_unknown_tap_is_a_flag_error_listing_the_blocks(tmp_path):
    r = extract_cli(tmp_path, "-b", LITE0, "--taps", "conv1")  # the tiny net has conv1, lite0 does not
    assert r.exit_code == 2
    assert ("--taps: efficientnet_lite0 has no block 'conv1'; its blocks, bottom to top: stem, block0, block1, "
            "block2, block3, block4, block5, block6, block7, block8, block9, block10, block11, block12, block13, "
            "block14, block15, head") in r.stderr
    assert not (tmp_path / "s.zarr").exists()  # checked before the store is touched


def test_backbones_lists_blocks_with_their_output_shapes():
    r = _run("backbones", "--blocks", TINY, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"name": TINY, "blocks": [{"block": "conv1", "output_shape": [16, 16, 8]},
                                                             {"block": "conv2", "output_shape": [8, 8, 16]}]}


def test_fine_tune_refuses_a_run_on_tapped_features(tiny):
    run = tiny["root"] / "tap_run"
    fit_head(tiny["store"], [f"{TINY}.conv1"], "logreg", run, progress=False)
    with pytest.raises(ParameterError, match=r"fitted on the tapped features tiny_test\.conv1; .*a head fitted on tiny_test\)"):
        fine_tune(run, tiny["root"] / "tuned")


def test_a_taps_cost_is_the_network_up_to_its_block():
    tapped = replace(resolve_config(TINY, weights="random"), tap="conv1")
    assert backbone_parameters(tapped) == 8 * 27 + 8  # conv1 alone, not conv2


@pytest.fixture(scope="module")
def lite0(orl_dir, tmp_path_factory) -> dict:
    """The real efficientnet_lite0 and its block 4 on 3 ORL people at 64 px (float32), then a head on both."""
    root = tmp_path_factory.mktemp("taps_lite0")
    data, store = root / "faces", root / "faces.zarr"
    for person in sorted(p for p in orl_dir.iterdir() if p.is_dir())[:3]:
        shutil.copytree(person, data / person.name)
    configs = _configs(_run("extract", data, "--store", store, "-b", LITE0, "--taps", TAP, "--image-size", SIZE,
                            "--dtype", "float32", "--split", "50/20/30", "-q", "--json"))
    fit = _run("fit-head", store, "-b", LITE0, "-b", f"{LITE0}.{TAP}", "--head", "logreg", "--out", root / "run", "-q")
    return {"root": root, "store": store, "configs": configs, "fit": fit}


def test_lite0_tap_is_its_own_config_and_leaves_the_final_key_alone(lite0):
    final, tapped = (c["key"] for c in lite0["configs"])
    assert final == "efficientnet_lite0-64-avg-v1-1e9928a8"  # as without --taps
    assert tapped.startswith("efficientnet_lite0.block4-64-avg-v1-")


def test_lite0_tap_features_are_the_blocks_pooled_output(lite0):
    import keras

    with open_store(lite0["store"]) as st:
        fs, root = st.load([f"{LITE0}.{TAP}"]), st.manifest().data_root
    spec = get_backbone(LITE0)
    net = spec.build_features(SIZE, "imagenet")
    block = keras.Model(net.input, net.get_layer(TAP_LAYER).output)
    images = spec.preprocess(np.stack([read_image(Path(root, p), SIZE) for p in fs.paths]))
    expected = block.predict(images, verbose=0).mean(axis=(1, 2))
    assert fs.features.shape == (30, 1, 40)
    assert np.abs(fs.features[:, 0] - expected).max() <= 1e-5
    # a tap runs only the network up to its block
    layers = {la.name for la in build_feature_extractor(replace(fs.configs[0].backbone, weights="random")).layers}
    assert TAP_LAYER in layers and "block5_dwconv" not in layers and "head_conv" not in layers


def test_head_on_final_and_tapped_features_exports_and_predicts_as_fitted(lite0, tmp_path):
    assert lite0["fit"].exit_code == 0, lite0["fit"].output
    run_dir = lite0["root"] / "run"
    run = load_run(run_dir)
    assert [f.backbone.tap for f in run.config.features] == ["", TAP]
    with open_store(lite0["store"]) as st:
        fs, root = st.load([LITE0, f"{LITE0}.{TAP}"]), st.manifest().data_root
    test = fs.indices("test")
    assert fs.features.shape[-1] == 1280 + 40 and len(test) >= 3
    expected = run.head.predict_proba(fs.features[test, 0])
    model = load_classifier(export(run_dir, tmp_path / "clf.keras"))
    got = np.array([p.probabilities for p in model.predict([str(Path(root, fs.paths[i])) for i in test])])
    assert np.abs(got - expected).max() <= 1e-4
