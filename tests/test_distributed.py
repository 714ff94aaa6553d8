"""Extraction past one process: a Dask cluster (--dask) and engine-free shards (--plan-only, --shard
I/N), each giving a store identical, bit for bit, to one process's, even when a worker or a shard
is killed with SIGKILL mid-run.

Every run here is real: spawned Dask worker processes and shard processes that import TensorFlow
and rebuild the backbone from the store's record (tiny_test and sleepy_test import conftest
through their builder reference; the plugin's backbone comes through its entry point).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SLEEPY, TINY, extract_cli, make_tree

from featcache.cli import cli
from featcache.errors import FeatcacheError, ParameterError
from featcache.extraction import ExtractOptions, extract
from featcache.extraction.dask_executor import DaskExecutor, _can_write
from featcache.ingest.augment import AugmentParams
from featcache.stores import DONE, StoreLockedError, open_store
from featcache.stores.lock import ShardLock

pytest.importorskip("distributed")

TESTS = Path(__file__).parent
PLUGIN = TESTS / "plugins"
CHUNK = 4


def options(backbone=TINY, augment=0, **kw) -> ExtractOptions:
    kw = {"weights": "random", "chunk_rows": CHUNK, "batch_size": 4, "progress": False, **kw}
    return ExtractOptions(backbones=(backbone,), augment=AugmentParams(augmented_views=augment), **kw)


def contents(store: Path) -> dict:
    """Per config: the raw arrays (features, status, checksums, row digests), and the skip record."""
    with open_store(store) as st:
        out = {"skipped": st.failed_images(st.manifest().paths, st.manifest().digests)}
        for key in st.keys():
            g = f"features/{key}"
            out[key] = {name: np.asarray(st.backend.read(f"{g}/{name}")) for name in ("features", "status", "checksum")}
            out[key]["digest"] = st[key].row_digests()
    return out


def assert_identical(a: Path, b: Path) -> None:
    ca, cb = contents(a), contents(b)
    assert ca.keys() == cb.keys()
    assert ca.pop("skipped") == cb.pop("skipped")
    for key in ca:
        for name in ("features", "status", "checksum"):
            assert ca[key][name].dtype == cb[key][name].dtype
            assert np.array_equal(ca[key][name], cb[key][name]), f"{key}/{name} differs"
        assert ca[key]["digest"] == cb[key]["digest"]


def tree_with_a_bad_file(root: Path, per_class: int) -> Path:
    data = make_tree(root, per_class=per_class)
    (data / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # decodes to an error
    return data


def featcache_process(*args: str, path: tuple[Path, ...] = (TESTS,)) -> subprocess.Popen:
    """`featcache ARGS` in a fresh process whose sys.path holds ``path``, which imports conftest
    first when it is on it (for its test backbones)."""
    code = (f"import sys{', conftest' if TESTS in path else ''}; from featcache.cli import main; "
            "sys.argv = ['featcache', *sys.argv[1:]]; main()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path)), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def units_done(store: Path) -> int:
    """Units of the store's one config whose rows are all written (0 while there is none yet)."""
    try:
        with open_store(store) as st:
            (key,) = st.keys()
            status = np.asarray(st[key].status())
    except (FeatcacheError, ValueError):
        return 0
    return sum(bool((status[i:i + CHUNK] != 0).all()) for i in range(0, len(status), CHUNK))


def wait_for_a_unit(store: Path, running) -> None:
    deadline = time.monotonic() + 180
    while units_done(store) < 1 and running() and time.monotonic() < deadline:
        time.sleep(0.05)


# -- shards ---------------------------------------------------------------------------------------------

def test_two_concurrent_shards_one_killed_then_the_finishing_run_equal_one_process(tmp_path):
    data = tree_with_a_bad_file(tmp_path / "data", per_class=6)  # 19 files: 5 units of 4 rows
    opts = options(SLEEPY)
    extract(data, tmp_path / "one.zarr", opts)
    store = tmp_path / "s.zarr"
    planned = extract(data, store, opts, plan_only=True)
    (key,) = [c.key for c in planned.configs]
    assert planned.configs[0].pending == 19 and planned.configs[0].extracted == 0
    shard_args = [data, "--store", store, "-b", SLEEPY, "--weights", "random", "--batch-size", "4", "-q", "--json"]
    shard0 = featcache_process("extract", *shard_args, "--shard", "0/2")
    shard1 = featcache_process("extract", *shard_args, "--shard", "1/2")
    wait_for_a_unit(store, lambda: shard1.poll() is None)
    shard1.send_signal(signal.SIGKILL)  # mid-run: shard 1's units 1 and 3 are not both done yet
    out0, err0 = shard0.communicate(timeout=120)
    shard1.wait(timeout=30)
    report = json.loads(out0)
    assert report["configs"][0]["pending"] == 0, err0  # shard 0 finished its units
    skipped = [s["path"] for s in report["skipped"]]  # the broken file, if its row is one of shard 0's
    assert skipped in ([], ["red/broken.png"]) and shard0.returncode == (1 if skipped else 0)
    with open_store(store) as st:
        status = np.asarray(st.backend.read(f"features/{key}/status"))
        assert (status[:CHUNK] != 0).all() and (status[2 * CHUNK:3 * CHUNK] != 0).all()  # shard 0: units 0, 2, 4
        assert not (status[CHUNK:2 * CHUNK] != 0).all() or not (status[3 * CHUNK:4 * CHUNK] != 0).all()
        assert st.shards.get("0-of-2")["stats"][key]["rows"] > 0
    finished = extract(data, store, opts)  # finishes what the killed shard left, folds in the records
    assert 0 < finished.configs[0].extracted < 8
    assert_identical(tmp_path / "one.zarr", store)
    with open_store(store) as st:
        assert not st.backend.groups("shards"), "the shards' records were folded in"
        # every decodable row counted once, but for a unit the kill may have caught between its write
        # and the shard's record of it
        assert 18 - CHUNK <= st.config_status(key).stats.rows <= 18
        assert [p for p, _ in st.failed_images(st.manifest().paths, st.manifest().digests)] == ["red/broken.png"]
    assert not list(tmp_path.glob("s.zarr.shard-*.lock"))


def test_a_shard_refuses_an_unplanned_store_other_options_a_twin_and_hdf5(tmp_path):
    data = make_tree(tmp_path / "data", per_class=2)
    store = tmp_path / "s.zarr"
    with pytest.raises(FeatcacheError, match="does not exist: plan it first"):
        extract(data, store, options(), shard="0/2")
    extract(data, store, options())  # extracted, but never planned for shards
    with pytest.raises(FeatcacheError, match="was not planned for shards"):
        extract(data, store, options(), shard="0/2")
    extract(data, store, options(), plan_only=True)
    with pytest.raises(FeatcacheError, match="planned with other options.*tiny_test"):
        extract(data, store, options(augment=1), shard="0/2")
    with pytest.raises(ParameterError, match="was planned for"):
        extract(make_tree(tmp_path / "other", per_class=1), store, options(), shard="0/2")
    twin = ShardLock(store, "1-of-2")
    try:
        with pytest.raises(StoreLockedError, match="shard 1/2 is already running"):
            extract(data, store, options(), shard="1/2")
        with pytest.raises(StoreLockedError, match=r"shards of a sharded run: shard 1/2 \(pid"):
            extract(data, store, options())  # no full run beside running shards
    finally:
        twin.release()
    assert extract(data, store, options(), shard="1/2").configs[0].pending == 0
    h5 = tmp_path / "s.h5"
    extract(data, h5, options(), plan_only=True)
    with pytest.raises(FeatcacheError, match="single writer"):
        extract(data, h5, options(), shard="0/2")


@pytest.mark.parametrize("args, message", [
    (["--shard", "2/2"], "--shard: expected I/N with 0 <= I < N"),
    (["--shard", "0/2", "--plan-only"], "--shard: a shard computes in its own process"),
    (["--dask", "local:two"], "--dask: expected local:N"),
    (["--dask", "local:0"], "--dask: local:N needs at least 1 worker"),
])
def test_bad_distribution_flags_are_one_line_errors(tmp_path, args, message):
    r = extract_cli(tmp_path, *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output


@pytest.mark.parametrize("args, message", [
    (["--executor", "shard:2/2"], "--executor: expected I/N with 0 <= I < N"),
    (["--executor", "local:0"], "--executor: local:N needs at least 1 worker"),
    (["--executor", "cloud"], "--executor: expected one of process, local:N|tcp://HOST:PORT, plan-only, shard:I/N, "
                              "got 'cloud'"),
    (["--executor", "local:2", "--dask", "local:2"], "--dask and --executor set the same thing: give one of them"),
    (["--executor", "plan-only", "--shard", "0/2"], "--shard: a shard computes in its own process"),
])
def test_one_executor_option_says_who_computes_and_refuses_two(tmp_path, args, message):
    r = extract_cli(tmp_path, *args)
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output, r.output
    assert not (tmp_path / "s.zarr").exists()


def test_the_executor_registry_turns_each_text_into_its_executor():
    from featcache.extraction import executors as ex

    EXECUTORS, InProcessExecutor, PlanOnlyExecutor, ShardExecutor, make_executor = (
        ex.EXECUTORS, ex.InProcessExecutor, ex.PlanOnlyExecutor, ex.ShardExecutor, ex.make_executor)

    assert EXECUTORS.names() == ["dask", "plan-only", "process", "shard"]
    assert type(make_executor(None)) is InProcessExecutor and type(make_executor("process")) is InProcessExecutor
    assert make_executor("plan-only").plan_only and type(make_executor("plan-only")) is PlanOnlyExecutor
    shard = make_executor("shard:1/3")
    assert isinstance(shard, ShardExecutor) and (shard.shard.index, shard.shard.count) == (1, 3)
    for spec in ("local:2", "tcp://127.0.0.1:8786"):
        dask = make_executor(spec)
        assert isinstance(dask, DaskExecutor) and dask.client is None, "nothing is started before it is entered"


def test_plan_only_then_shards_then_a_finishing_run_through_executor(tmp_path):
    """The new spelling end to end, in this process: --executor plan-only, shard:0/2 and shard:1/2,
    then a plain run; the store equals one process's."""
    data = make_tree(tmp_path / "data", per_class=3)  # 9 images: 3 units of 4 rows
    args = [str(data), "--store", str(tmp_path / "s.zarr"), "-b", TINY, "--weights", "random", "--batch-size", "4",
            "-q", "--json"]
    runner = CliRunner()
    planned = json.loads(runner.invoke(cli, ["extract", *args, "--executor", "plan-only"]).stdout)
    assert planned["configs"][0]["pending"] == 9 and planned["configs"][0]["extracted"] == 0
    for shard in ("shard:0/2", "shard:1/2"):
        r = runner.invoke(cli, ["extract", *args, "--executor", shard])
        assert r.exit_code == 0, r.output
    finished = json.loads(runner.invoke(cli, ["extract", *args]).stdout)
    assert finished["configs"][0]["pending"] == 0 and finished["configs"][0]["extracted"] == 0
    extract(data, tmp_path / "one.zarr", options(batch_size=4, chunk_rows=None))
    assert_identical(tmp_path / "one.zarr", tmp_path / "s.zarr")


# -- Dask -----------------------------------------------------------------------------------------------

def test_a_dask_run_refuses_hdf5_before_starting_anything(tmp_path):
    executor = DaskExecutor("local:2")
    with pytest.raises(FeatcacheError, match="single writer; a distributed run needs a Zarr store"):
        extract(make_tree(tmp_path / "d", per_class=1), tmp_path / "s.h5", options(), executor=executor)
    assert executor.entered == 0 and executor.client is None, "no cluster was started"
    assert not (tmp_path / "s.h5").exists()


def test_a_worker_that_cannot_open_the_store_says_why(tmp_path):
    assert "does not exist" in _can_write(str(tmp_path / "elsewhere.zarr"), "0" * 32) or \
        "no run holds its lock" in _can_write(str(tmp_path / "elsewhere.zarr"), "0" * 32)
    extract(make_tree(tmp_path / "d", per_class=1), tmp_path / "s.zarr", options())
    assert "no run holds its lock" in _can_write(str(tmp_path / "s.zarr"), "0" * 32)


def test_a_dask_worker_killed_mid_run_leaves_a_store_identical_to_one_process(tmp_path):
    data = tree_with_a_bad_file(tmp_path / "data", per_class=8)  # 25 files: 7 units, 2 workers
    extract(data, tmp_path / "one.zarr", options(SLEEPY))
    store = tmp_path / "s.zarr"
    executor = DaskExecutor("local:2")
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(r=extract(data, store, options(SLEEPY), executor=executor)))
    run.start()
    wait_for_a_unit(store, run.is_alive)
    pids = executor.client.run(os.getpid)
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)  # mid-run: each worker has units queued
    run.join(timeout=240)
    assert not run.is_alive() and "r" in result
    (cfg,) = result["r"].configs
    assert cfg.extracted == 24 and cfg.failed == 1 and cfg.pending == 0
    assert [s.path for s in result["r"].skipped] == ["red/broken.png"]
    assert_identical(tmp_path / "one.zarr", store)
    with open_store(store) as st:
        status = st.config_status(cfg.key)
        assert status.done == 24 and status.stats.rows == 24


def test_dask_local_2_from_the_cli_with_a_plugin_backbone_and_k2_views_equals_one_process(tmp_path):
    """One fresh process whose sys.path holds only the plugin runs `extract` twice, in itself and
    with --dask local:2: the workers find odd_net through its entry point, compute K=2 augmented
    views, and write what the single process writes."""
    data = make_tree(tmp_path / "data", per_class=6)
    args = [str(data), "-b", "odd_net", "--augment", "2", "--dtype", "float32", "-q", "--json"]
    commands = [["extract", *args, "--store", str(tmp_path / "one.zarr")],
                ["extract", *args, "--store", str(tmp_path / "dask.zarr"), "--dask", "local:2"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (PLUGIN / "src", PLUGIN / "dist"))),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(PLUGIN / "run_cli.py"), json.dumps(commands)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, many = json.loads(proc.stdout.splitlines()[-1])
    assert one["exit_code"] == 0 and many["exit_code"] == 0, many["stderr"][-3000:]
    (cfg,) = json.loads(many["stdout"])["configs"]
    assert cfg["extracted"] == 18 and cfg["views"] == 3 and cfg["backbone"] == "odd_net"
    assert_identical(tmp_path / "one.zarr", tmp_path / "dask.zarr")
    with open_store(tmp_path / "dask.zarr") as st:
        assert st.config(cfg["key"]).backbone.builder == "featcache_test_plugin:ODD_NET"
        assert (np.asarray(st[cfg["key"]].status())[:18] == DONE).all()


def test_a_sweep_on_a_dask_cluster_gives_the_leaderboard_of_a_local_sweep(tmp_path):
    store = tmp_path / "s.zarr"
    extract(make_tree(tmp_path / "data", per_class=10), store, options())
    args = ["sweep", str(store), "-b", TINY, "--head", "logreg", "--C", "0.01,1,100", "--json", "-q"]
    here = CliRunner().invoke(cli, args)
    there = CliRunner().invoke(cli, [*args, "--dask", "local:1", "--out", str(tmp_path / "sweep")])
    assert here.exit_code == 0 and there.exit_code == 0, there.output
    board = [{k: t[k] for k in ("C", "val_accuracy", "val_loss")} for t in json.loads(here.stdout)["leaderboard"]]
    assert board == [{k: t[k] for k in ("C", "val_accuracy", "val_loss")} for t in json.loads(there.stdout)["leaderboard"]]
    assert len(list((tmp_path / "sweep" / "trials").iterdir())) == 3  # written by the worker
