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
