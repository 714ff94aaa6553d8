"""One writer at a time, readers never blocked, and a consistent image list for every reader.

The other writer is always a real second process (tests/store_harness.py hold|switch); the stores
are real Zarr / HDF5 stores written by featcache's extract() with a numpy stand-in backbone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, extract_cli, make_tree
from store_harness import NUMPY_NET, run_extract

from featcache.cli import cli
from featcache.errors import FeatcacheError
from featcache.ingest.scan import scan
from featcache.stores import StoreLockedError, WorkUnit, open_store
from featcache.stores.lock import lock_path

HARNESS = str(Path(__file__).with_name("store_harness.py"))


@pytest.fixture(params=[".zarr", ".h5"])
def store(request, tmp_path) -> Path:
    path = tmp_path / f"features{request.param}"
    run_extract(make_tree(tmp_path / "data", per_class=2), path)
    return path


class Holder:
    """Another process holding the store's lock, as a running extract does."""

    def __init__(self, store: Path):
        self.proc = subprocess.Popen([sys.executable, HARNESS, "hold", str(store)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.token = self.proc.stdout.readline().strip()
        assert self.token, "the holder did not start"

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


def test_a_second_writer_is_refused_at_once_naming_the_holder_and_readers_go_on(store, tmp_path):
    holder = Holder(store)
    with pytest.raises(StoreLockedError) as refused:  # not "no such folder": refused before any scanning
        run_extract(tmp_path / "no such folder", store)
    message = str(refused.value)
    assert f"pid {holder.proc.pid}" in message and "store_harness.py hold" in message and str(store) in message
    with open_store(store) as st:  # readers are never blocked
        assert len(st.load([NUMPY_NET]).paths) == 6
    holder.release()
    assert run_extract(tmp_path / "data", store).configs[0].reused == 6
    assert not lock_path(store).exists(), "a finished writer removes its lock file"


def test_a_second_extract_command_exits_2_with_one_line_naming_the_holder(tmp_path):
    store = tmp_path / "features.zarr"
    holder = Holder(store)
    result = CliRunner().invoke(cli, ["extract", str(make_tree(tmp_path / "data", per_class=1)), "--store", str(store),
                                      "-b", TINY, "--weights", "random", "-q"])
    holder.release()
    assert result.exit_code == 2, result.output
    assert f"pid {holder.proc.pid}" in result.output and "Traceback" not in result.output
    assert not store.exists(), "the refused run created nothing"


def test_a_writer_killed_with_kill_9_leaves_no_stale_lock(store, tmp_path):
    holder = Holder(store)
    os.kill(holder.proc.pid, signal.SIGKILL)
    holder.proc.wait(timeout=30)
    assert lock_path(store).exists()  # the file stays, the kernel dropped the lock with its holder
    assert run_extract(tmp_path / "data", store).configs[0].reused == 6
    assert not lock_path(store).exists()


def test_a_worker_with_the_holders_run_token_writes_its_units_only_and_anyone_else_is_refused(store):
    holder = Holder(store)
    if store.suffix == ".h5":  # one writer, the holder: no workers beside it
        with pytest.raises(FeatcacheError, match="single writer"):
            open_store(store, "a", token=holder.token)
        holder.release()
        return
    with open_store(store, "a", token=holder.token) as worker:  # a worker of the holder's run
        (key,) = worker.keys()
        unit = WorkUnit(key, 0, worker[key].chunk_rows(), (0,))
        rows = worker.rows([key])
        feats = rows.read([rows.digests.index(worker[key].row_digests()[0])])  # row 0's stored features
        worker.commit_unit(unit, worker[key].row_digests()[:unit.stop], [0], feats[:1] + 1, [])  # its own rows
        with pytest.raises(FeatcacheError, match="a worker writes only its own units"):
            worker[key].add_stats(rows=0, images=0, seconds=1.5)  # what the run shares is the holder's
    with pytest.raises(StoreLockedError, match=f"pid {holder.proc.pid}"):
        open_store(store, "a", token="0" * 32)
    with pytest.raises(StoreLockedError, match=f"pid {holder.proc.pid}"):
        open_store(store, "a")  # the worker's close released nothing
    holder.release()
    with open_store(store) as st:
        fs = st.load([key])  # the worker's row verifies
        assert np.array_equal(fs.features[fs.digests.index(st[key].row_digests()[0])], (feats[:1] + 1)[0])
    with pytest.raises(StoreLockedError, match="no run holds its lock"):
        open_store(store, "a", token=holder.token)


def test_readers_during_writes_always_see_one_whole_image_list(store, tmp_path):
    """Another process switches the store between two folders with other classes and images; every
    read sees exactly one of the two image lists (paths, labels and classes together)."""
    a = make_tree(tmp_path / "a", per_class=2, classes={"cat": (200, 40, 40), "dog": (40, 200, 40)})
    b = make_tree(tmp_path / "b", per_class=1, classes={"ant": (40, 40, 200), "bee": (90, 90, 10), "cow": (9, 9, 9)},
                  start_seed=100)
    expected = {tuple(m.classes): (m.paths, m.labels.tolist()) for m in (scan(a), scan(b))}
    rounds = 10 if store.suffix == ".zarr" else 6
    writer = subprocess.Popen([sys.executable, HARNESS, "switch", str(store), str(rounds), str(a), str(b)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    reads, seen = 0, set()
    while writer.poll() is None or reads == 0:
        with open_store(store) as st:
            m = st.manifest()
        seen.add(tuple(m.classes))
        if tuple(m.classes) in expected:
            assert (m.paths, m.labels.tolist()) == expected[tuple(m.classes)]
        else:
            assert m.classes == ["blue", "green", "red"]  # the store's first folder, before any switch
        reads += 1
    assert writer.wait() == 0
    assert reads > 10 and len(seen & set(expected)) == 2, (reads, seen)


# -- a lock path featcache must not follow (issue 21, findings 3 and 6) -----------------------------------

def _plant(kind: str, path: Path, victim: Path) -> None:
    if kind == "symlink":
        path.symlink_to(victim)
    elif kind == "dangling link":
        path.symlink_to(path.with_name("nothing-here"))
    elif kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)


@pytest.mark.parametrize("kind", ["symlink", "dangling link", "folder", "fifo"])
def test_a_store_lock_path_that_is_not_a_regular_file_is_refused_with_one_line_and_nothing_followed(tmp_path, kind):
    """`ln -s victim store.zarr.lock; featcache extract ...` used to truncate victim and write the
    holder's JSON into it (and a folder or a dangling link there was a traceback)."""
    victim = tmp_path / "notes.txt"
    victim.write_text("precious\n")
    store = tmp_path / "s.zarr"
    _plant(kind, lock_path(store), victim)
    result = extract_cli(tmp_path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert str(lock_path(store)) in result.output and "remove" in result.output
    assert victim.read_text() == "precious\n"
    assert os.path.lexists(lock_path(store)), "what was there is left for the user to look at"
    assert not (tmp_path / "nothing-here").exists()


def test_a_shard_lock_or_run_lock_that_is_a_symlink_is_refused_and_its_target_unchanged(store, tmp_path):
    from featcache.stores.lock import LockPathError, RunLock, ShardLock, shard_lock_path

    victim = tmp_path / "notes.txt"
    victim.write_text("precious\n")
    shard_lock_path(store, "0-of-2").symlink_to(victim)
    with pytest.raises(LockPathError, match="symbolic link"):
        ShardLock(store, "0-of-2")
    run = tmp_path / "runs" / "r"
    run.parent.mkdir()
    lock_path(run).symlink_to(victim)
    with pytest.raises(LockPathError, match="symbolic link"):
        RunLock.acquire(run)
    assert victim.read_text() == "precious\n"
