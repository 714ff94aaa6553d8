"""Run folders (issue 21, findings 1 and 5): replaced in one step, one writer at a time, bound by
an integrity record that predict, export and fine-tune check, and every number that sizes an
allocation bounded before anything is built.

The stores are real Zarr stores written by extract() with the numpy stand-in backbone
(store_harness.py); the heads are real logreg heads (scikit-learn, no TensorFlow).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_image, make_tree
from store_harness import NUMPY_NET, run_extract

from featcache.cli import cli
from featcache.errors import FeatcacheError
from featcache.stores.lock import RunLock, lock_path
from featcache.train.fit import fit_head
from featcache.train.run import CONFIG_FILE, RunConfig, load_run

FIRST = {"red": (200, 40, 40), "green": (40, 180, 60)}
SECOND = {"cyan": (40, 200, 200), "magenta": (200, 40, 200), "yellow": (220, 220, 40)}


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stores")
    out = {}
    for name, classes in (("first", FIRST), ("second", SECOND)):
        out[name] = root / f"{name}.zarr"
        run_extract(make_tree(root / name, per_class=6, classes=classes), out[name], split="60/20/20")
    return out


def fit(store: Path, out: Path):
    return fit_head(store, [NUMPY_NET], "logreg", out=out, progress=False)


def beside(run: Path) -> list[str]:
    return sorted(p.name for p in run.parent.iterdir() if p != run)


def digests(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def test_an_existing_run_is_replaced_whole_and_nothing_is_left_beside_it(stores, tmp_path):
    run = tmp_path / "runs" / "r"
    first = fit(stores["first"], run)
    assert first.run_dir == str(run) and load_run(run).config.classes == sorted(FIRST)
    second = fit(stores["second"], run)
    assert second.run_dir == str(run)
    loaded = load_run(run)
    assert loaded.config.classes == sorted(SECOND) and loaded.head.n_classes_ == len(SECOND)
    assert beside(run) == [], "no lock, no temporary folder, no old version left"


def test_a_fit_killed_while_writing_over_an_existing_run_leaves_the_old_run_whole(stores, tmp_path, monkeypatch):
    """Finding 1: the head used to be written in place first and config.json last, so a kill in
    between left the new head with the old classes, and predict labelled every image wrongly."""
    run = tmp_path / "r"
    fit(stores["first"], run)
    before = digests(run)

    def killed(self, folder, extra=None):
        raise KeyboardInterrupt  # as a kill after the head was written, before config.json

    monkeypatch.setattr(RunConfig, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        fit(stores["second"], run)
    monkeypatch.undo()
    assert digests(run) == before
    assert load_run(run).config.classes == sorted(FIRST)
    assert beside(run) == []
    fit(stores["second"], run)  # the next fit is not refused by anything the killed one left
    assert load_run(run).config.classes == sorted(SECOND)


def test_a_sweep_killed_over_an_earlier_sweep_leaves_it_whole(stores, tmp_path, monkeypatch):
    """A sweep's --out (trial run folders, leaderboard, sweep.json) is replaced in one step: killed
    after some trials were written, the earlier sweep is there as it was, its leaderboard naming
    its own trials."""
    from featcache.train import sweep as sweep_module

    out = tmp_path / "sw"
    first = sweep_module.sweep(stores["first"], [NUMPY_NET], "logreg", {"C": [0.1, 1.0]}, out=out, progress=False)
    assert all(Path(t.result.run_dir).parent == out / "trials" for t in first.trials)
    before = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill after the trials, before the leaderboard

    monkeypatch.setattr(sweep_module, "write_leaderboard", killed)
    with pytest.raises(KeyboardInterrupt):
        sweep_module.sweep(stores["second"], [NUMPY_NET], "logreg", {"C": [0.1, 1.0]}, out=out, progress=False)
    monkeypatch.undo()
    assert {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert beside(out) == []
    second = sweep_module.sweep(stores["second"], [NUMPY_NET], "logreg", {"C": [0.1, 1.0]}, out=out, progress=False)
    assert load_run(second.best.result.run_dir).config.classes == sorted(SECOND)
    assert json.loads((out / "sweep.json").read_text())["best"]["run_dir"] == second.best.result.run_dir


def test_a_second_writer_of_one_run_folder_is_refused_naming_the_first(stores, tmp_path):
    run = tmp_path / "r"
    fit(stores["first"], run)
    before = digests(run)
    holder = RunLock.acquire(run)  # another fit-head, sweep or fine-tune writing it
    try:
        with pytest.raises(FeatcacheError, match=f"being written by another featcache process \\(pid {os.getpid()}"):
            fit(stores["second"], run)
    finally:
        holder.release()
    assert digests(run) == before and not lock_path(run).exists()


def _edit(run: Path, change) -> None:
    d = json.loads((run / CONFIG_FILE).read_text())
    change(d)
    (run / CONFIG_FILE).write_text(json.dumps(d))


TAMPERED = {
    "classes reordered": lambda d: d["classes"].reverse(),
    "a class renamed": lambda d: d["classes"].__setitem__(0, "blue"),
    "input size": lambda d: d["features"][0]["backbone"].__setitem__("input_size", 64),
    "preprocessing": lambda d: d["features"][0]["backbone"]["preprocess"].__setitem__("scale", [1.0, 1.0, 1.0]),
    "input_dim": lambda d: d.__setitem__("input_dim", 9),
    "temperature": lambda d: d.__setitem__("temperature", 3.0),
    "head parameters": lambda d: d["head"]["params"].__setitem__("C", 123.0),
}


@pytest.mark.parametrize("field", list(TAMPERED))
def test_predict_export_and_fine_tune_refuse_a_run_whose_config_was_edited(stores, tmp_path, field):
    """Finding 5: seven edits of config.json were accepted silently."""
    run = tmp_path / "r"
    fit(stores["first"], run)
    _edit(run, TAMPERED[field])
    with pytest.raises(FeatcacheError, match="changed after the run was written"):
        load_run(run)
    image = make_image(tmp_path / "x.png", FIRST["red"], seed=1)
    for args in (["predict", str(run), str(image)], ["export", str(run), "--out", str(tmp_path / "m.keras")],
                 ["fine-tune", str(run), "--out", str(tmp_path / "ft")]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert "changed after the run was written" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m.keras").exists() and not (tmp_path / "ft").exists()


def test_a_head_file_from_another_run_is_refused(stores, tmp_path):
    """Finding 1's folder by hand: one run's head beside another run's config.json."""
    first, second = tmp_path / "a", tmp_path / "b"
    fit(stores["first"], first)
    fit(stores["second"], second)
    head = RunConfig.read(first).files["head"][0]
    (first / head).write_bytes((second / head).read_bytes())
    with pytest.raises(FeatcacheError, match=f"{head} is not the file"):
        load_run(first)


@pytest.mark.parametrize(("field", "value", "named"), [
    ("input_size", 100000, "input_size"), ("input_size", 0, "input_size"), ("input_dim", 10**9, "input_dim"),
    ("augmented_views", 10**6, "augmented_views")])
def test_numbers_that_size_allocations_are_bounded_even_in_a_record_without_integrity(stores, tmp_path, field,
                                                                                        value, named):
    """Finding 5: input_size 100000 was OOM-killed at 21.8 GB inside predict. A record written
    before integrity records (or one whose digest was recomputed) is still bounded."""
    run = tmp_path / "r"
    fit(stores["first"], run)

    def change(d):
        del d["integrity"]
        if field == "input_size":
            d["features"][0]["backbone"]["input_size"] = value
        elif field == "augmented_views":  # test-time augmentation would compute every one
            d["features"][0]["augment"]["augmented_views"] = value
        else:
            d[field] = value

    _edit(run, change)
    with pytest.raises(FeatcacheError, match=named):
        load_run(run)


def test_a_record_without_integrity_is_read_as_before(stores, tmp_path):
    """Run folders written before integrity records load, with the same predictions."""
    run = tmp_path / "r"
    result = fit(stores["first"], run)
    _edit(run, lambda d: d.pop("integrity"))
    x = np.ones((2, result.input_dim), np.float32)
    assert np.array_equal(load_run(run).head.predict_proba(x), result.head.predict_proba(x))


def test_a_second_sweep_on_one_out_is_refused(stores, tmp_path):
    from featcache.train.sweep import sweep

    out = tmp_path / "sw"
    holder = RunLock.acquire(out)  # another sweep writing it
    try:
        with pytest.raises(FeatcacheError, match="being written by another featcache process"):
            sweep(stores["first"], [NUMPY_NET], "logreg", {"C": [0.1, 1.0]}, out=out, progress=False)
    finally:
        holder.release()
    result = sweep(stores["first"], [NUMPY_NET], "logreg", {"C": [0.1, 1.0]}, out=out, progress=False)
    assert len(result.trials) == 2 and beside(out) == [] and sorted(p.name for p in (out / "trials").iterdir()) == \
        sorted(Path(t.result.run_dir).name for t in result.trials)
    assert load_run(result.trials[0].result.run_dir).config.classes == sorted(FIRST)


def test_a_config_json_far_larger_than_a_record_is_refused_unparsed(stores, tmp_path):
    run = tmp_path / "r"
    fit(stores["first"], run)
    with (run / CONFIG_FILE).open("w") as f:
        f.write('{"classes": [' + '"x", ' * (4 << 20) + '"y"]}')  # 20 MB
    with pytest.raises(FeatcacheError, match="larger than a run config can be"):
        load_run(run)
