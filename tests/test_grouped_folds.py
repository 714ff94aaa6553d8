"""Grouped cross-validation folds: no group in two folds' test parts; impossible folds refused."""

import numpy as np
import pytest

from featcache.errors import ParameterError
from featcache.train.crossval import make_folds


def _pool(n_groups=12, per_group=4):
    groups = [f"patient{g}" for g in range(n_groups) for _ in range(per_group)]
    labels = np.array([g % 2 for g in range(n_groups) for _ in range(per_group)])
    return [f"img{i}.png" for i in range(len(labels))], labels, groups


def test_no_group_in_two_folds():
    paths, labels, groups = _pool()
    plan = make_folds(paths, labels, 3, repeats=2, seed=1, groups=groups)
    assert plan.grouped and len(plan.splits) == 6
    for r in range(2):
        seen = {}
        for fold, (tr, te) in enumerate(plan.splits[3 * r:3 * r + 3]):
            assert not {groups[i] for i in tr} & {groups[i] for i in te}
            for i in te:
                assert seen.setdefault(groups[i], fold) == fold
        assert len(seen) == 12  # every group tested once per repeat


def test_ungrouped_unchanged():
    paths, labels, _ = _pool()
    assert not make_folds(paths, labels, 3).grouped


@pytest.mark.parametrize("groups_n,why", [(4, "groups"), (9, "class")])
def test_impossible_grouped_folds(groups_n, why):
    paths, labels, groups = _pool(n_groups=groups_n)
    with pytest.raises(ParameterError, match=why) as exc:
        make_folds(paths, labels, 5, groups=groups)
    assert exc.value.param == "folds"


def test_compare_folds_on_a_grouped_store(tmp_path):
    """A real store from a tree whose file names carry a patient id (group_by regex): the folds
    drawn from its manifest keep every patient in one fold, and the CLI JSON says grouped."""
    import json

    from click.testing import CliRunner
    from conftest import TINY, make_image

    from featcache.cli import cli
    from featcache.extraction import ExtractOptions, extract
    from featcache.stores import open_store
    from featcache.train.crossval import common_pool

    data = tmp_path / "d"
    for g in range(24):
        for i in range(3):
            make_image(data / ("a" if g % 2 else "b") / f"patient{g:03d}_{i}.png", (40 * (g % 5), 90, 200), 1000 * g + i)
    store = tmp_path / "s.zarr"
    extract(data, store, ExtractOptions(backbones=(TINY,), weights="random", progress=False,
                                        group_by=r"patient(\d+)_"))
    with open_store(store) as st:
        m = st.manifest()
        paths, labels = common_pool([st.rows([k]) for k in st.keys()])
    by_path = dict(zip(m.paths, m.groups, strict=True))
    groups = [by_path[p] for p in paths]
    plan = make_folds(paths, labels, 3, seed=0, groups=groups)
    tested = [{groups[i] for i in te} for _, te in plan.splits]
    assert sum(len(t) for t in tested) == len(set().union(*tested))  # no group in two test parts
    r = CliRunner().invoke(cli, ["compare", str(store), "--folds", "3", "-q", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["grouped_folds"] is True
    text = CliRunner().invoke(cli, ["compare", str(store), "--folds", "3", "-q"], catch_exceptions=False)
    assert "3-fold CV (grouped: no group in two folds' test parts)" in text.output


def test_info_shows_group_counts(tmp_path):
    """info on a grouped store: groups and images per split, in text and JSON."""
    import json

    from click.testing import CliRunner
    from conftest import TINY, make_image

    from featcache.cli import cli
    from featcache.extraction import ExtractOptions, extract

    data = tmp_path / "d"
    for g in range(10):
        for i in range(2):
            make_image(data / ("a" if g % 2 else "b") / f"p{g}_{i}.png", (20 * g, 90, 200), 100 * g + i)
    store = tmp_path / "s.zarr"
    extract(data, store, ExtractOptions(backbones=(TINY,), weights="random", progress=False, group_by=r"p(\d+)_"))
    r = CliRunner().invoke(cli, ["info", str(store), "--json"], catch_exceptions=False)
    groups = json.loads(r.output)["groups"]
    assert sum(n["groups"] for n in groups.values()) == 10 and sum(n["images"] for n in groups.values()) == 20
    text = CliRunner().invoke(cli, ["info", str(store)], catch_exceptions=False).output
    assert "groups  train" in text
