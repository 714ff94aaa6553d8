"""featcache's real extract() with a numpy stand-in for the backbone, for the store tests.

Everything extract() does to a store runs for real (scan, lock, manifest, plan, reader, batcher,
writer, checksums, HDF5 journal and commit); only the network is replaced by a fixed random
projection of the pixels, so no TensorFlow is imported and a run takes milliseconds.

Run as ``python store_harness.py serve``, it is a fork server for the crash tests: it imports all
that once, then for each command (a JSON line on stdin) forks a child that runs one extract,
optionally under ``strace -p`` (to kill it at its Nth write, or make writes fail), and answers with
a JSON line on stdout: how the child ended and the error message it gave, if any.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from featcache.backbones import PREPROCESS, BackboneSpec, list_backbones, register_backbone
from featcache.errors import FeatcacheError
from featcache.extraction import ExtractOptions, extract, plan

NUMPY_NET = "numpy_test"
DIM = 8
CHUNK = 2


def _no_keras(size, weights):
    raise RuntimeError("the numpy test backbone has no Keras model")


if NUMPY_NET not in {s.name for s in list_backbones()}:
    register_backbone(BackboneSpec(
        name=NUMPY_NET, input_size=32, feature_dim=DIM, preprocess=PREPROCESS["tf"], build_features=_no_keras,
        weights_source="a fixed random projection (tests only)", weights_available=lambda: True,
        weights_identity=lambda size: "numpy-v1"))


class NumpyRunner:
    """BackboneRunner's interface: fixed-shape batches in, (batch_size, DIM) features out. Each row
    is computed on its own, so its features never depend on its batch neighbours. ``batch_effect``:
    how much they depend on the batch size (a real backbone's arithmetic rounds differently for
    other batch shapes)."""

    batch_effect = 0.0

    def __init__(self, cfg, batch_size: int, device=None, together=()):
        assert not together, "the numpy backbone has no taps"
        self.cfg = cfg
        self.batch_size = batch_size
        self.together = ()
        self.dim, self.dims = DIM, [DIM]
        size = cfg.backbone.input_size
        self.weights = np.random.default_rng(0).standard_normal((size * size * 3, DIM)).astype(np.float32)

    def prepare(self, images: np.ndarray, slot: int = 0) -> np.ndarray:
        x = np.empty((self.batch_size, *images.shape[1:]), np.float32)
        self.cfg.backbone.preprocess(images, out=x[:len(images)])
        x[len(images):] = x[len(images) - 1]
        return x

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.stack([row.ravel() @ self.weights for row in x]) / 100 + self.batch_effect * self.batch_size


@contextlib.contextmanager
def numpy_backbone():
    saved = plan.BackboneRunner
    plan.BackboneRunner = NumpyRunner
    try:
        yield
    finally:
        plan.BackboneRunner = saved


def run_extract(data, store, **kw):
    """extract() with the numpy backbone: small chunks, one decoding thread (a fixed order of writes)."""
    kw = {"weights": "random", "chunk_rows": CHUNK, "progress": False, "workers": 1, "batch_size": 4, **kw}
    with numpy_backbone():
        return extract(data, store, ExtractOptions(backbones=[NUMPY_NET], **kw))


def fingerprint(store: Path) -> dict:
    """What a store holds, as a reader sees it: the manifest, and per config and image its status
    and (verified) features; whether verify_store finds it clean; and what else lies beside it or
    inside it (a lock, a journal, temporary files: nothing, after a finished run)."""
    import hashlib

    from featcache.stores import open_store
    from featcache.stores.verify import verify_store

    with open_store(store) as st:
        m = st.manifest()
        out = {"manifest": [m.paths, m.digests, m.labels.tolist(), m.splits.tolist(), m.classes, m.data_root,
                            m.presplit, m.split, m.ignored],
               "skipped": st.failed_images(m.paths, m.digests), "configs": {}}
        for key in st.keys():
            fs = st.load([key], allow_incomplete=True)
            attrs = st.backend.get_attrs(f"features/{key}")
            out["configs"][key] = {  # done images (fs.paths), failed ones (skipped): the rest are pending
                "done": fs.paths,
                "features": hashlib.sha256(fs.features.tobytes()).hexdigest(),
                "attrs": [attrs.get(k) for k in ("config", "chunk_rows", "batch_size", "dim")]}
    out["clean"] = verify_store(store).clean
    out["beside"] = sorted(p.name for p in store.parent.iterdir() if p != store)
    out["partial"] = sorted(str(p) for p in store.rglob("*.partial")) if store.is_dir() else []
    return out


# -- the fork server -------------------------------------------------------------------------------

def _traced(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        return any(line.startswith("TracerPid:") and line.split()[1] != "0" for line in f)


def run_fit(store, out):
    """fit-head with a logreg head (scikit-learn: no TensorFlow) over the numpy backbone's features."""
    from featcache.train.fit import fit_head

    return fit_head(store, [NUMPY_NET], "logreg", out=out, progress=False)


def run_fingerprint(run: Path) -> dict:
    """What a reader of a run folder gets: its classes and its head's probabilities on fixed rows,
    or the refusal; and what else lies beside it (a lock, a temporary folder: nothing, after a
    finished fit)."""
    from featcache.train.run import load_run

    try:
        loaded = load_run(run)
    except FeatcacheError as exc:
        return {"refused": str(exc)}
    x = np.random.default_rng(0).standard_normal((4, loaded.config.input_dim)).astype(np.float32)
    return {"classes": loaded.config.classes, "proba": loaded.head.predict_proba(x).round(6).tolist(),
            "beside": sorted(p.name for p in run.parent.iterdir() if p != run)}


def _child(go: int, report: int, cmd: dict) -> None:
    ctypes.CDLL(None).prctl(0x59616D61, ctypes.c_ulong(-1), 0, 0, 0)  # PR_SET_PTRACER_ANY: strace -p may attach
    os.read(go, 1)
    code, message = 0, b""
    try:
        if cmd.get("op") == "tiny_run":  # a keras server: the tiny Keras backbone's store, a logreg run on it
            from conftest import TINY

            from featcache.train.fit import fit_head

            extract(cmd["data"], cmd["store"], ExtractOptions(backbones=[TINY], weights="random", dtype="float32",
                                                              split="60/20/20", progress=False, workers=1))
            fit_head(cmd["store"], [TINY], "logreg", out=cmd["out"], progress=False)
        elif cmd.get("op") == "export":  # a keras server: export run folder "store" as the model "out"
            from featcache.serve.export import export

            export(cmd["store"], cmd["out"])
        elif cmd.get("op") == "worker_unit":  # a Dask worker's side of one unit (no Dask: its run_unit)
            from featcache.extraction import dask_executor
            from featcache.stores import WorkUnit

            t = cmd["task"]
            dask_executor.BackboneRunner = NumpyRunner  # the worker builds its model from the record
            dask_executor.run_unit(dask_executor.UnitTask(
                t["store"], t["token"], t["config"], t["batch_size"], WorkUnit(**t["unit"]), tuple(t["region"]),
                t["paths"], 1))
        elif cmd.get("out"):  # a fit-head into the run folder "out"
            run_fit(cmd["store"], cmd["out"])
            if cmd.get("fingerprint"):
                message = json.dumps(run_fingerprint(Path(cmd["out"]))).encode()
        else:
            run_extract(cmd["data"], cmd["store"])
            if cmd.get("fingerprint"):
                message = json.dumps(fingerprint(Path(cmd["store"]))).encode()
    except FeatcacheError as exc:
        code, message = 2, str(exc).encode()
    except BaseException:  # noqa: BLE001  (a traceback is a failure the test reports)
        code, message = 3, traceback.format_exc().encode()
    os.writev(report, [message])  # writev: not among the system calls the tests count or break
    os._exit(code)


def _warm_up() -> None:
    """Do once, before forking, what every child would otherwise do first (imports, registries),
    without starting zarr's I/O thread (a forked child would wait on it forever)."""
    from PIL import Image
    from tqdm import tqdm
    from zarr.registry import get_codec_class

    Image.init()  # imports every image plugin
    tqdm.get_lock()  # a semaphore, i.e. a child's only write outside the store
    for codec in ("bytes", "zstd", "crc32c", "vlen-utf8"):
        get_codec_class(codec)
    ExtractOptions(backbones=[NUMPY_NET], weights="random").feature_configs()
    # fit-head's: the modules, and one confusion plot (matplotlib's font cache is written once, here)
    import tempfile

    import threadpoolctl  # noqa: F401

    import featcache.train.fit  # noqa: F401
    from featcache.heads import make_head
    from featcache.train.metrics import evaluate, plot_confusion

    make_head("logreg")
    with tempfile.TemporaryDirectory() as tmp:
        labels = np.array([0, 1])
        plot_confusion(evaluate(labels, np.eye(2), ["a", "b"]), ["a", "b"], Path(tmp) / "c.png", "warm-up")


def _warm_up_keras() -> None:
    """A keras server's: TensorFlow, Keras and the tiny Keras backbone (conftest), imported only:
    no TensorFlow op runs before a fork, so each child starts TensorFlow's runtime afresh."""
    import conftest  # noqa: F401  (registers the tiny backbone)
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    import featcache.serve.export  # noqa: F401
    import featcache.serve.formats  # noqa: F401


def serve(kind: str = "numpy") -> None:
    import subprocess

    _warm_up()
    if kind == "keras":
        _warm_up_keras()

    for line in sys.stdin:
        cmd = json.loads(line)
        go_r, go_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            os.close(rep_r)
            _child(go_r, rep_w, cmd)
        os.close(go_r)
        os.close(rep_w)
        tracer = None
        if cmd.get("strace"):
            tracer = subprocess.Popen(["strace", "-qq", "-f", "-p", str(pid), *cmd["strace"]],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 20
            while not _traced(pid) and tracer.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
        os.write(go_w, b"x")
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(rep_r, "rb") as report:
            message = report.read().decode(errors="replace")
        strace_err = ""
        if tracer is not None:
            strace_err = tracer.communicate(timeout=60)[1].decode(errors="replace")
        answer = {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                  "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                  "message": message, "strace": strace_err[-2000:]}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class ForkServer:
    """The test side of ``store_harness.py serve``."""

    def __init__(self, kind: str = "numpy"):
        """``kind`` "keras": the children can also build Keras models (TensorFlow imported once)."""
        import subprocess

        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
               "FEATCACHE_FSYNC": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}  # kills, not power cuts: fsync changes
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__)), "serve", kind], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=str(Path(__file__).parent))

    def request(self, cmd: dict) -> dict:
        """One command of any kind (``op``: "tiny_run", "export"; see _child) in a forked child."""
        self.proc.stdin.write(json.dumps({"data": None, "strace": None, "fingerprint": False, **cmd}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died")
        return json.loads(line)

    def run(self, data: Path | None, store: Path, strace: list[str] | None = None, fingerprint: bool = False,
            out: Path | None = None) -> dict:
        """One extract (or, with ``out``, one fit-head into the run folder ``out``) in a forked
        child: optionally under strace, optionally answering with the store's (the run folder's)
        fingerprint (as JSON, in "message") after a successful run."""
        return self.request({"data": str(data), "store": str(store), "strace": strace, "fingerprint": fingerprint,
                             "out": str(out) if out else None})

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# -- other processes the lock tests need --------------------------------------------------------

def hold(store: str) -> None:
    """Hold the store's lock (as a writer does) until stdin closes; print the run token first."""
    from featcache.stores import open_store

    with open_store(store, "a") as st:
        print(st.token, flush=True)
        sys.stdin.read()


def switch_manifests(store: str, rounds: int, *folders: str) -> None:
    """Make each folder's scan the store's manifest in turn, ``rounds`` times: one open (one
    writer session) per switch, so an HDF5 store is committed, i.e. replaced, each time."""
    from featcache.ingest.scan import scan
    from featcache.stores import open_store

    manifests = [scan(f) for f in folders]
    print("ready", flush=True)
    for i in range(int(rounds)):
        with open_store(store, "a") as st:
            st.write_manifest(manifests[i % len(manifests)])


if __name__ == "__main__":
    {"serve": serve, "hold": hold, "switch": switch_manifests}[sys.argv[1]](*sys.argv[2:])
