"""The head commands import TensorFlow only where a backbone or a Keras head needs it: fit-head,
sweep and compare with logreg or knn (numpy and scikit-learn heads) never do, and where Keras is
needed its first import is still quiet (TensorFlow's C++ start-up lines hidden). Mechanism, not
timing: benchmarks/bench_startup.py measures what it saves."""

from __future__ import annotations

import os
import subprocess
import sys

from synthetic_store import write_synthetic_store

# Runs CLI commands (separated by "+") in one process as the console script runs one, then says
# whether TensorFlow or Keras got imported.
RUN_CLI = ("import sys\n"
           "from featcache.cli import cli\n"
           "args = sys.argv[1:]\n"
           "while args:\n"
           "    one, args = (args[:args.index('+')], args[args.index('+') + 1:]) if '+' in args else (args, [])\n"
           "    assert cli.main(one, standalone_mode=False) in (0, None), one\n"
           "print('MODULES', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")


def _run(*args: str, code: str = RUN_CLI) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # TensorFlow's own chatter on
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)


def test_scikit_learn_heads_never_import_tensorflow(tmp_path):
    store = tmp_path / "s.zarr"
    write_synthetic_store(store, 120, 16, n_classes=4)
    commands = [["fit-head", str(store), "--head", "logreg", "--out", str(tmp_path / "lr"), "-q"],
                ["fit-head", str(store), "--head", "knn", "--out", str(tmp_path / "knn"), "-q"],
                ["sweep", str(store), "--head", "logreg", "--C", "0.1,1", "--out", str(tmp_path / "sw"), "-q"],
                ["compare", str(store), "--head", "logreg", "--head", "knn", "-q"]]
    proc = _run(*[a for c in commands for a in [*c, "+"]][:-1])  # one process: one scikit-learn import
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "MODULES []", proc.stdout[-500:]
    assert (tmp_path / "lr" / "config.json").is_file() and (tmp_path / "sw").is_dir()


def test_the_first_import_of_keras_is_quiet_and_keeps_its_own_loader():
    """What a Keras head or a backbone triggers inside a command: TensorFlow imported with fd 2
    silenced, then the hook gone and the modules' loaders their own again."""
    code = ("import sys\n"
            "from featcache.cli.common import QuietTensorFlowFinder, _QuietLoader, install_quiet_tensorflow\n"
            "install_quiet_tensorflow()\n"
            "import keras\n"
            "assert 'tensorflow' in sys.modules\n"
            "assert not any(isinstance(f, QuietTensorFlowFinder) for f in sys.meta_path)\n"
            "assert not isinstance(keras.__spec__.loader, _QuietLoader) and keras.__loader__ is keras.__spec__.loader\n"
            "keras.layers.Dense(2)(keras.ops.ones((1, 3)))\n"
            "print('ok')\n")
    proc = _run(code=code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    assert proc.stderr == "", proc.stderr[-2000:]
