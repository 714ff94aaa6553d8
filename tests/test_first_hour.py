"""What a newcomer trips over in the first hour (issue 24): a failed extract leaves nothing behind,
an empty configuration is named as such and removed by `featcache rm`, selection is forgiving
but explicit, a changed split is refused, Ctrl-C says what it kept, throughput says what it counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TINY, make_tree

from featcache.cli import cli
from featcache.errors import FeatcacheError


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _extract(data: Path, store: Path, **kw):
    from featcache.extraction import ExtractOptions, extract

    return extract(data, store, ExtractOptions(backbones=(TINY,), weights="random", progress=False, **kw))


def _empty_config(store: Path, data: Path, **augment) -> str:
    """What an older featcache left after a run that failed in its first unit: the config recorded
    (rows allocated, all pending), nothing computed."""
    from featcache.backbones.model import resolve_config
    from featcache.config import FeatureConfig
    from featcache.ingest.augment import AugmentParams
    from featcache.ingest.scan import scan
    from featcache.stores import open_store

    cfg = FeatureConfig(resolve_config(TINY, weights="random"), AugmentParams(**augment))
    with open_store(store, mode="a") as st:
        m = scan(data, st.manifests.stored_split())
        st.write_manifest(m)
        key = st.ensure_config(cfg, 16)
        st[key].plan(m.digests)
    return key


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "data", per_class=6)


# -- 1. a failed run records nothing -------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_weights_that_cannot_load_leave_no_configuration(tree, tmp_path, suffix):
    """A weights file Keras cannot read fails when the network is built: before any of its config
    is recorded (the old way: a config with 0 rows done stayed in the store for good)."""
    from featcache.extraction import ExtractOptions, extract
    from featcache.stores import open_store

    bad = tmp_path / "not_weights.h5"
    bad.write_bytes(b"this is not an HDF5 weights file" * 10)
    store = tmp_path / f"s{suffix}"
    _extract(tree, store)
    with pytest.raises(FeatcacheError, match="cannot load weights file"):
        extract(tree, store, ExtractOptions(backbones=("mobilenet",), weights=str(bad), image_size=32,
                                            progress=False))
    with open_store(store) as st:
        assert [st.config(k).backbone.name for k in st.keys()] == [TINY]
    fresh = tmp_path / f"fresh{suffix}"
    with pytest.raises(FeatcacheError, match="cannot load weights file"):
        extract(tree, fresh, ExtractOptions(backbones=("mobilenet",), weights=str(bad), image_size=32,
                                            progress=False))
    assert not fresh.exists()  # nothing at all: not even an image list


def test_an_empty_configuration_is_shown_empty_and_removed_by_rm(tree, tmp_path):
    store = tmp_path / "s.zarr"
    _extract(tree, store)
    empty = _empty_config(store, tree, augmented_views=2)
    info = json.loads(invoke("info", store, "--json").output)
    assert {c["key"]: c["state"] for c in info["configs"]}[empty] == "empty"
    text = invoke("info", store).output
    assert "1 empty configuration(s)" in text and f"featcache rm {store} -b KEY" in text
    verify = invoke("verify", store)
    assert verify.exit_code == 0 and f"{empty}: empty (no row extracted;" in verify.output
    assert "18 rows ok" in verify.output  # the complete one counts its rows done
    compare = invoke("compare", store, "--head", "knn", "-q")
    assert compare.exit_code == 0, compare.output
    assert f"features {empty} are empty" in compare.output and f"featcache rm {store} --backbone {empty}" in compare.output
    # -b by name: the one complete config, not the empty one (old: "pass the full key")
    fit = invoke("fit-head", store, "-b", TINY, "--head", "knn", "--out", tmp_path / "run", "-q", "--json")
    assert fit.exit_code == 0, fit.output
    assert json.loads(fit.stdout)["keys"] != [empty]

    wrong = invoke("rm", store, "-b", "nope", "--json")
    assert wrong.exit_code == 2 and "-b: " in wrong.stderr and empty in wrong.stderr
    removed = invoke("rm", store, "-b", empty, "--json")
    assert removed.exit_code == 0, removed.output
    assert json.loads(removed.stdout) == {"store": str(store), "removed": empty, "done": 0, "images": 18}
    info = json.loads(invoke("info", store, "--json").output)
    assert [c["state"] for c in info["configs"]] == ["complete"]
    assert invoke("verify", store).exit_code == 0
    assert "Usage" in invoke("rm", "--help").output


def test_rm_on_hdf5_goes_through_the_journal_and_keeps_the_rest(tree, tmp_path):
    from featcache.stores import open_store, remove_config

    store = tmp_path / "s.h5"
    _extract(tree, store)
    with open_store(store) as st:
        keep = st.keys()[0]
        before = st.load([keep]).features
    empty = _empty_config(store, tree, augmented_views=1)
    assert remove_config(store, empty).done == 0
    with open_store(store) as st:
        assert st.keys() == [keep]
        assert (st.load([keep]).features == before).all()
    assert not Path(f"{store}.journal").exists()


# -- 2. selection ---------------------------------------------------------------------------------

def test_backbone_optional_with_one_complete_config_and_key_prefixes(tree, tmp_path):
    from featcache.stores import open_store

    store = tmp_path / "s.zarr"
    _extract(tree, store)
    _empty_config(store, tree, augmented_views=1)
    with open_store(store) as st:
        complete = next(k for k in st.keys() if st.config_status(k).complete)
        assert st.resolve_key(None) == complete
        assert st.resolve_key(complete[:-3]) == complete
    for command in (["fit-head", store, "--head", "knn", "--out", tmp_path / "r"], ["sweep", store, "--head", "knn",
                    "--k", "1,3", "--out", tmp_path / "sw"]):
        res = invoke(*command, "-q")
        assert res.exit_code == 0, res.output
