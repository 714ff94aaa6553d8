"""Crash safety, proven the SQLite way: kill extract at every write system call in turn, resume
with a normal run, and require the store to be exactly what an uninterrupted run makes.

strace's fault injection kills the child (SIGKILL, as kill -9) at its Nth ``write`` (zarr's files,
each written to a temporary name and renamed), Nth ``pwrite64`` (the lock file, featcache's own
small files, and every write HDF5 makes while committing a new file) and Nth ``renameat``
(featcache's own renames: journal, commit, removals). strace counts per system call and per
thread, and each of these system calls comes from one thread only (fsio.py), so N runs over every
write in order. The child is featcache's real extract() with a numpy stand-in for the backbone,
forked from servers that imported everything once (store_harness.py); the kill points run on as
many servers as there are cores, at most two.

"Exactly": the same manifest, the same done/failed/pending images with the same skip reasons,
bit-identical (checksum-verified) features, the same config records, and nothing left beside or
inside the store (lock, journal, temporary files).
"""

from __future__ import annotations

import collections
import json
import os
import queue
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import make_image, make_tree
from store_harness import ForkServer

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (scripts/setup.sh installs it)")

SYSCALLS = ("write", "pwrite64", "renameat")
COLOURS = {"red": (200, 40, 40), "blue": (40, 60, 200)}


@pytest.fixture(scope="module")
def servers():
    pool = [ForkServer() for _ in range(min(2, os.cpu_count() or 1))]
    yield pool
    for srv in pool:
        srv.close()


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> list[Path]:
    """Three versions of a data folder; the last drops an image, adds one and an unreadable file."""
    root = tmp_path_factory.mktemp("data")
    versions = [make_tree(root / f"v{i}", per_class=1, classes=COLOURS) for i in range(3)]
    make_image(versions[1] / "red" / "more.png", COLOURS["red"], seed=50)
    (versions[2] / "red" / "red_000.png").unlink()
    make_image(versions[2] / "blue" / "new.png", COLOURS["blue"], seed=101)
    (versions[2] / "blue" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return versions


class Sweep:
    def __init__(self, servers, tmp_path: Path, base: Path | None, data: Path, suffix: str):
        self.free = queue.Queue()
        for srv in servers:
            self.free.put(srv)
        self.tmp_path, self.base, self.data, self.suffix = tmp_path, base, data, suffix

    def fresh(self, name: str) -> Path:
        folder = self.tmp_path / name
        folder.mkdir()
        store = folder / f"features{self.suffix}"
        if self.base is not None:
            (shutil.copytree if self.base.is_dir() else shutil.copy)(self.base, store)
        return store

    def run(self, store: Path, strace: list[str] | None = None, fingerprint: bool = False,
            out: Path | None = None) -> dict:
        srv = self.free.get()
        try:
            return srv.run(self.data, store, strace, fingerprint, out)
        finally:
            self.free.put(srv)

    def write_counts(self) -> dict[str, int]:
        """How many times the busiest thread makes each write system call in one run."""
        trace = self.tmp_path / "trace.txt"
        answer = self.run(self.fresh("count"), ["-e", f"trace={','.join(SYSCALLS)}", "-o", str(trace)])
        assert answer["code"] == 0, answer
        pattern = re.compile(r"(\d+) +(\w+)\(")
        per_thread = collections.Counter(m.groups() for m in map(pattern.match, trace.read_text().splitlines()) if m)
        return {call: max((n for (_, c), n in per_thread.items() if c == call), default=0) for call in SYSCALLS}

    def kill_and_resume(self, call: str, n: int, expected: dict) -> tuple[str, object]:
        store = self.fresh(f"{call}-{n}")
        killed = self.run(store, ["-e", f"trace={call}", "-e", f"inject={call}:signal=KILL:when={n}", "-o", "/dev/null"])
        if killed["signal"] != 9:
            return "not killed", killed
        resumed = self.run(store, fingerprint=True)
        if resumed["code"] == 2:
            return "refused", resumed["message"]
        if resumed["code"] != 0:
            return "traceback", resumed["message"]
        got = json.loads(resumed["message"])
        if got != expected:
            return "different", {k: (got[k], expected[k]) for k in got if got[k] != expected[k]}
        return "identical", None

    def __call__(self, calls=SYSCALLS) -> dict:
        expected = json.loads(self.run(self.fresh("reference"), fingerprint=True)["message"])
        counts = {call: n for call, n in self.write_counts().items() if call in calls}
        points = [(call, n) for call, total in counts.items() for n in range(1, total + 1)]
        with ThreadPoolExecutor(self.free.qsize()) as pool:
            results = list(pool.map(lambda p: (p, self.kill_and_resume(*p, expected)), points))
        outcomes = collections.Counter(kind for _, (kind, _) in results)
        return {"points": len(points), "per_call": counts, **outcomes,
                "failures": [(p, kind, detail) for p, (kind, detail) in results if kind != "identical"]}


def check(result: dict, what: str) -> None:
    print(f"\n{what}: {result}")
    assert not result["failures"], result["failures"][:5]
    assert result["identical"] == result["points"] > 0


def test_a_kill_at_any_write_of_a_new_zarr_store_then_a_resume_gives_the_uninterrupted_store(servers, folders,
                                                                                           tmp_path):
    check(Sweep(servers, tmp_path, None, folders[0], ".zarr")(), "new .zarr store")


def test_a_kill_at_any_journal_or_commit_write_of_a_new_hdf5_store_then_a_resume_gives_the_same(servers, folders,
                                                                                              tmp_path):
    """The journal's own zarr writes are those of the sweep above; here its set-up and the commit."""
    check(Sweep(servers, tmp_path, None, folders[0], ".h5")(calls=("pwrite64", "renameat")), "new .h5 store")


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_kill_at_any_write_of_an_incremental_run_then_a_resume_gives_the_uninterrupted_store(servers, folders,
                                                                                                tmp_path, suffix):
    """The killed run adds an image and an unreadable file, and drops an image. Two runs made the
    zarr store, so the third also removes the oldest image list (the same code removes it from an
    HDF5 store's journal: one small run makes that base, as its journal copy adds kill points)."""
    base = tmp_path / f"base{suffix}"
    for data in folders[:2] if suffix == ".zarr" else folders[:1]:
        Sweep(servers, tmp_path, None, data, suffix).run(base)
    check(Sweep(servers, tmp_path, base, folders[2], suffix)(), f"incremental {suffix} run")


@pytest.mark.parametrize(("suffix", "call", "from_end"), [(".zarr", "write", 2), (".h5", "write", 2),
                                                          (".h5", "pwrite64", None)])
def test_a_full_disk_is_one_clear_error_and_the_next_run_loses_nothing_computed(servers, folders, tmp_path, suffix,
                                                                                call, from_end):
    """Every write from the Nth on fails with ENOSPC: near the end of the run (its last unit), or,
    for HDF5, from the commit's first write of the new file (the lock file's record and the
    journal's come before it)."""
    from featcache.stores import open_store

    data = make_tree(tmp_path / "data", per_class=2, classes=COLOURS)  # 4 images: 2 units
    sweep = Sweep(servers, tmp_path, None, data, suffix)
    expected = json.loads(sweep.run(sweep.fresh("reference"), fingerprint=True)["message"])
    n = sweep.write_counts()[call] - from_end if from_end else 3
    store = sweep.fresh("full")
    full = sweep.run(store, ["-e", f"trace={call}", "-e", f"inject={call}:error=ENOSPC:when={n}+", "-o", "/dev/null"])
    assert full["code"] == 2, full
    assert "no space left" in full["message"] and str(store) in full["message"] and "resume" in full["message"]
    if call == "write":  # the units written before the disk filled up are there (an HDF5 store: committed)
        with open_store(store) as st:
            assert st.config_status(st.keys()[0]).done >= 2
    else:  # the commit failed: the old file (none) stays, the run's work waits in its journal
        assert not store.exists() and store.with_name(store.name + ".journal").is_dir()
    resumed = sweep.run(store, fingerprint=True)
    assert resumed["code"] == 0 and json.loads(resumed["message"]) == expected, resumed


# -- fit-head over an existing run folder (issue 21, finding 1) ------------------------------------------------

FIT_SYSCALLS = ("write", "pwrite64", "ftruncate", "mkdir", "rename", "renameat2", "unlink", "unlinkat", "rmdir")
OTHER_COLOURS = {"cyan": (40, 200, 200), "magenta": (200, 40, 200), "yellow": (220, 220, 40)}


def _per_thread_counts(trace: Path, calls) -> dict[str, int]:
    pattern = re.compile(r"(\d+) +(\w+)\(")
    per_thread = collections.Counter(m.groups() for m in map(pattern.match, trace.read_text().splitlines()) if m)
    return {call: max((n for (_, c), n in per_thread.items() if c == call), default=0) for call in calls}


def test_a_kill_at_any_write_of_fit_head_over_an_existing_run_leaves_the_old_run_or_the_new_one(servers, tmp_path):
    """Kill `fit-head SECOND --out r` over r (a run of FIRST's classes) at each of its writes,
    renames, removals and folder creations in turn: r must then load as the old run or as the new
    one (never one run's head with the other's classes, never refused), and the next fit-head
    must give the uninterrupted new run with nothing left beside it."""
    from store_harness import run_extract, run_fingerprint

    stores = {}
    for name, colours in (("first", COLOURS), ("second", OTHER_COLOURS)):
        stores[name] = tmp_path / f"{name}.zarr"
        run_extract(make_tree(tmp_path / name, per_class=5, classes=colours), stores[name], split="60/20/20")
    base = tmp_path / "base" / "r"
    assert servers[0].run(None, stores["first"], out=base)["code"] == 0
    old = run_fingerprint(base)
    sweep = Sweep(servers, tmp_path, None, tmp_path, "")

    def fresh(name: str) -> Path:
        run = tmp_path / name / "r"
        shutil.copytree(base, run)
        return run

    new = json.loads(sweep.run(stores["second"], fingerprint=True, out=fresh("reference"))["message"])
    assert new["classes"] == sorted(OTHER_COLOURS) and new["beside"] == [] and old["classes"] == sorted(COLOURS)
    trace = tmp_path / "trace.txt"
    counted = sweep.run(stores["second"], ["-e", f"trace={','.join(FIT_SYSCALLS)}", "-o", str(trace)],
                        out=fresh("count"))
    assert counted["code"] == 0, counted
    counts = {c: n for c, n in _per_thread_counts(trace, FIT_SYSCALLS).items() if n}
    points = [(call, n) for call, total in counts.items() for n in range(1, total + 1)]

    def kill_and_refit(point):
        call, n = point
        run = fresh(f"{call}-{n}")
        killed = sweep.run(stores["second"], ["-e", f"trace={call}", "-e", f"inject={call}:signal=KILL:when={n}",
                                              "-o", "/dev/null"], out=run)
        if killed["signal"] != 9:
            return "not killed", killed
        state = {k: v for k, v in run_fingerprint(run).items() if k != "beside"}
        seen = "old" if state == {k: v for k, v in old.items() if k != "beside"} else \
            "new" if state == {k: v for k, v in new.items() if k != "beside"} else None
        if seen is None:
            return "mixed or refused", state
        again = sweep.run(stores["second"], fingerprint=True, out=run)
        if again["code"] != 0 or json.loads(again["message"]) != new:
            return f"{seen}, then the next fit differs", again
        return seen, None

    with ThreadPoolExecutor(sweep.free.qsize()) as pool:
        results = list(pool.map(lambda p: (p, kill_and_refit(p)), points))
    outcomes = collections.Counter(kind for _, (kind, _) in results)
    print(f"\nfit-head over an existing run: {len(points)} kill points {counts}: {dict(outcomes)}")
    failures = [(p, kind, detail) for p, (kind, detail) in results if kind not in ("old", "new")]
    assert not failures, failures[:5]
    assert outcomes["old"] > 0 and outcomes["new"] > 0


# -- export over an existing model (issue 21, finding 4) --------------------------------------------------------

EXPORT_SYSCALLS = ("write", "rename", "renameat2", "unlink", "unlinkat", "mkdir", "rmdir")


@pytest.fixture(scope="module")
def keras_servers():
    pool = [ForkServer("keras") for _ in range(min(2, os.cpu_count() or 1))]
    yield pool
    for srv in pool:
        srv.close()


def _model_state(model: Path) -> dict:
    """What a reader of an exported .keras finds: its bytes' digest, the class names inside it, and
    whether its sidecar is the one written with it (a stale sidecar is refused by its readers)."""
    import hashlib
    import zipfile

    if not model.is_file():
        return {"model": "missing"}
    data = model.read_bytes()
    try:
        with zipfile.ZipFile(model) as zf:
            classes = json.loads(zf.read("metadata.json")).get("class_names") if zf.testzip() is None else "damaged"
    except (zipfile.BadZipFile, KeyError, ValueError):
        classes = "damaged"
    sidecar = model.with_name(model.name + ".labels.json")
    recorded = json.loads(sidecar.read_text()).get("model_sha256") if sidecar.is_file() else None
    digest = hashlib.sha256(data).hexdigest()
    return {"sha256": digest, "classes": classes, "sidecar": "bound" if recorded == digest else "stale or missing"}


def test_a_kill_at_any_write_of_export_over_an_existing_model_leaves_the_old_model_or_the_new_one(keras_servers,
                                                                                                  tmp_path):
    """Kill `export SECOND --out m.keras` over m.keras (an export of FIRST) at each of its
    writes, renames, removals and folder creations: m.keras must then be the old model, or the
    new one whole (its classes inside; its sidecar bound to it, or refused as stale), and the next
    export must give the new model with its sidecar and nothing left beside it. The children are
    real exports of a real Keras model (the tiny backbone + a logreg head)."""
    runs = {}
    for name, colours in (("first", COLOURS), ("second", OTHER_COLOURS)):
        runs[name] = tmp_path / f"run-{name}"
        made = keras_servers[0].request({"op": "tiny_run", "data": str(make_tree(tmp_path / name, per_class=4,
                                                                                   classes=colours)),
                                         "store": str(tmp_path / f"{name}.zarr"), "out": str(runs[name])})
        assert made["code"] == 0, made
    sweep = Sweep(keras_servers, tmp_path, None, tmp_path, "")
    base = tmp_path / "base" / "m.keras"
    assert sweep.free.queue[0].request({"op": "export", "store": str(runs["first"]), "out": str(base)})["code"] == 0
    old = _model_state(base)
    assert old["classes"] == sorted(COLOURS) and old["sidecar"] == "bound"

    def fresh(name: str) -> Path:
        shutil.copytree(base.parent, tmp_path / name)
        return tmp_path / name / base.name

    def export(model: Path, strace=None) -> dict:
        srv = sweep.free.get()
        try:
            return srv.request({"op": "export", "store": str(runs["second"]), "out": str(model), "strace": strace})
        finally:
            sweep.free.put(srv)

    trace = tmp_path / "trace.txt"
    assert export(fresh("count"), ["-e", f"trace={','.join(EXPORT_SYSCALLS)}", "-o", str(trace)])["code"] == 0
    counts = {c: n for c, n in _per_thread_counts(trace, EXPORT_SYSCALLS).items() if n}
    points = [(call, n) for call, total in counts.items() for n in range(1, total + 1)]

    def kill_and_export_again(point):
        call, n = point
        model = fresh(f"{call}-{n}")
        killed = export(model, ["-e", f"trace={call}", "-e", f"inject={call}:signal=KILL:when={n}", "-o", "/dev/null"])
        if killed["signal"] != 9:
            return "not killed", killed
        state = _model_state(model)
        if state == old:
            seen = "old"
        elif state.get("classes") == sorted(OTHER_COLOURS):
            seen = "new" if state["sidecar"] == "bound" else "new, stale sidecar refused"
        elif state.get("sha256") == old["sha256"]:
            seen = "old, stale sidecar refused"
        else:
            return "mixed or damaged", state
        again = export(model)
        state = _model_state(model)
        if again["code"] != 0 or state["classes"] != sorted(OTHER_COLOURS) or state["sidecar"] != "bound":
            return f"{seen}, then the next export failed", (again, state)
        if sorted(p.name for p in model.parent.iterdir()) != [model.name, f"{model.name}.labels.json"]:
            return f"{seen}, then left files beside", sorted(p.name for p in model.parent.iterdir())
        return seen, None

    with ThreadPoolExecutor(sweep.free.qsize()) as pool:
        results = list(pool.map(lambda p: (p, kill_and_export_again(p)), points))
    outcomes = collections.Counter(kind for _, (kind, _) in results)
    print(f"\nexport over an existing model: {len(points)} kill points {counts}: {dict(outcomes)}")
    failures = [(p, kind, detail) for p, (kind, detail) in results if kind.split(",")[0] not in ("old", "new")
                or "then" in kind]
    assert not failures, failures[:5]
    assert outcomes["old"] > 0 and outcomes["new"] > 0


# -- a Dask worker's unit (issue 21): its commit_unit path, killed at each write ----------------------

def test_a_worker_killed_at_any_write_of_its_unit_leaves_a_store_the_next_run_completes_identically(servers, tmp_path):
    """A worker opens the store with the run's token and writes one unit (features, checksums,
    then status), while the client holds the lock. Killed at each of its writes, the next run
    completes the store exactly as an uninterrupted one. The worker is featcache's run_unit, the
    function a Dask task calls, forked from a warm server without Dask around it."""
    from dataclasses import asdict

    from store_harness import CHUNK, NUMPY_NET, numpy_backbone

    from featcache.extraction import ExtractOptions, extract
    from featcache.stores import open_store

    data = make_tree(tmp_path / "data", per_class=2, classes=COLOURS)  # 4 images: 2 units of CHUNK rows
    base = tmp_path / "planned.zarr"
    with numpy_backbone():
        extract(data, base, ExtractOptions(backbones=[NUMPY_NET], weights="random", chunk_rows=CHUNK, progress=False,
                                           workers=1, batch_size=4), executor="plan-only")
    sweep = Sweep(servers, tmp_path, base, data, ".zarr")
    expected = json.loads(sweep.run(sweep.fresh("reference"), fingerprint=True)["message"])

    def worker(store: Path, strace: list[str]) -> dict:
        with open_store(store, "a") as holder:  # the client: holds the lock while its worker writes
            (key,) = holder.keys()
            group, manifest = holder[key], holder.manifest()
            unit = group.plan(manifest.digests)[1]
            region = group.row_digests()[unit.start:unit.stop]
            paths = {d: str(data / p) for p, d in zip(manifest.paths, manifest.digests, strict=True)}
            task = {"store": str(store), "token": holder.token, "config": holder.config(key).to_dict(),
                    "batch_size": 4, "unit": asdict(unit), "region": region, "paths": paths}
            srv = sweep.free.get()
            try:
                return srv.request({"op": "worker_unit", "task": task, "strace": strace})
            finally:
                sweep.free.put(srv)

    trace = tmp_path / "trace.txt"
    assert worker(sweep.fresh("count"), ["-e", f"trace={','.join(FIT_SYSCALLS)}", "-o", str(trace)])["code"] == 0
    counts = {c: n for c, n in _per_thread_counts(trace, FIT_SYSCALLS).items() if n}
    points = [(call, n) for call, total in counts.items() for n in range(1, total + 1)]

    def kill_and_resume(point):
        call, n = point
        store = sweep.fresh(f"{call}-{n}")
        killed = worker(store, ["-e", f"trace={call}", "-e", f"inject={call}:signal=KILL:when={n}", "-o", "/dev/null"])
        if killed["signal"] != 9:
            return "not killed", killed
        resumed = sweep.run(store, fingerprint=True)
        if resumed["code"] != 0:
            return "refused or traceback", resumed["message"]
        return ("identical", None) if json.loads(resumed["message"]) == expected else ("different", None)

    with ThreadPoolExecutor(sweep.free.qsize()) as pool:
        results = list(pool.map(lambda p: (p, kill_and_resume(p)), points))
    outcomes = collections.Counter(kind for _, (kind, _) in results)
    print(f"\nworker unit: {len(points)} kill points {dict(counts)}: {dict(outcomes)}")
    assert points and outcomes["identical"] == len(points), [r for r in results if r[1][0] != "identical"][:5]
