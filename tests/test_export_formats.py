"""Deployment without featcache: every export format (plain .keras, SavedModel, TFLite float32,
float16 and int8) read in a process that never imports featcache, and by `featcache predict`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY, make_tree

from featcache.backbones import PREPROCESS
from featcache.cli import cli
from featcache.extraction import ExtractOptions, extract
from featcache.heads import make_head
from featcache.ingest.decode import collect_image_files, iter_image_batches
from featcache.serve.calibration import CalibrationOptions, choose
from featcache.serve.formats import FORMATS, ExportJob
from featcache.serve.predict import load_classifier
from featcache.train.fit import fit_head
from featcache.train.run import load_run

SIZE = 128  # efficientnet_lite0's input size in the real-photo test

# (format, quantize, file name) of every model the formats make
MODELS = [("keras", "none", "clf.keras"), ("savedmodel", "none", "clf_savedmodel"),
          ("tflite", "none", "clf.tflite"), ("tflite", "float16", "clf_f16.tflite"),
          ("tflite", "int8", "clf_int8.tflite")]

# Run in a fresh Python with only numpy and Keras/TensorFlow (or only LiteRT) importable as a user
# would: argv[1] a JSON request, argv[2] where to write the JSON answer.
PLAIN_PYTHON = r"""
import json, sys, zipfile
import numpy as np

ask = json.loads(sys.argv[1])
pixels = np.load(ask["pixels"])  # (n, S, S, 3) uint8 RGB
got = {}
if "keras" in ask:
    import keras
    got["keras"] = keras.saving.load_model(ask["keras"]).predict_on_batch(pixels.astype("float32")).tolist()
    got["keras classes"] = json.loads(zipfile.ZipFile(ask["keras"]).read("metadata.json"))["class_names"]
if "savedmodel" in ask:
    import tensorflow as tf
    sm = tf.saved_model.load(ask["savedmodel"])
    out = sm.signatures["serving_default"](image=tf.constant(pixels))
    got["savedmodel"] = out["probabilities"].numpy().tolist()
    got["savedmodel classes"] = [c.decode() for c in out["class_names"].numpy()[0]]
    photos = [open(p, "rb").read() for p in ask["jpegs"]]
    as_bytes = sm.signatures["serving_bytes"](image_bytes=tf.constant(photos))
    as_pixels = sm.signatures["serving_default"](image=tf.constant(np.load(ask["jpeg_pixels"])))
    got["jpeg labels"] = [[c.decode() for c in o["label"].numpy()] for o in (as_bytes, as_pixels)]
    got["jpeg probabilities"] = [o["probabilities"].numpy().tolist() for o in (as_bytes, as_pixels)]
for name, path in ask.get("tflite", {}).items():
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=path)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for image in pixels:
        it.set_tensor(inp["index"], image[None])
        it.invoke()
        rows.append(it.get_tensor(out["index"])[0].astype(np.float64))
    scale, zero = out["quantization"]
    got[name] = ((np.array(rows) - zero) * scale if scale else np.array(rows)).tolist()
got["modules"] = sorted(m for m in ("featcache", "tensorflow") if m in sys.modules)
json.dump(got, open(sys.argv[2], "w"))
"""


def _start_plain_python(ask: dict, answer: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-c", PLAIN_PYTHON, json.dumps(ask), str(answer)], cwd=answer.parent,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _answer(proc: subprocess.Popen, answer: Path) -> dict:
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    return json.loads(answer.read_text())


def _pixels(files: list[Path], size: int) -> np.ndarray:
    """Decoded exactly as `featcache predict` decodes."""
    batch = next(iter_image_batches(files, [size], len(files)))
    assert not batch.errors
    return batch.images[0]


def _probs(preds) -> np.ndarray:
    assert all(p.error is None for p in preds)
    return np.array([p.probabilities for p in preds])


@pytest.fixture(scope="module")
def orl_deployment(orl_dir, imagenet_samples_dir, tmp_path_factory) -> dict:
    """efficientnet_lite0 + a linear head on 8 ORL people x 5 photos; what `featcache predict RUN`
    gives on the 40 photos; every format written from that one model (traced once); and what a
    Python without featcache reads from them: a TensorFlow process for .keras and the SavedModel,
    and at the same time a LiteRT-only process (no TensorFlow, as on a device) for TFLite."""
    root = tmp_path_factory.mktemp("deploy")
    data = root / "faces"
    for person in sorted(p for p in orl_dir.iterdir() if p.is_dir())[:8]:
        (data / person.name).mkdir(parents=True)
        for photo in sorted(person.glob("*.pgm"))[:5]:
            shutil.copy(photo, data / person.name / photo.name)
    store = root / "faces.zarr"
    # 128 px, not 224: the same network and weights at a third of the arithmetic (the suite's time)
    extract(data, store, ExtractOptions(backbones=["efficientnet_lite0"], dtype="float32", split="80/0/20",
                                        image_size=SIZE, progress=False))
    run_dir = fit_head(store, ["efficientnet_lite0"], make_head("linear", {"epochs": 40}), root / "run",
                       progress=False).run_dir
    photos = collect_image_files([data])
    clf = load_classifier(run_dir)  # what `featcache predict RUN` runs
    expected = _probs(clf.predict(photos))
    job = ExportJob(clf.model, clf.classes, "test run", choose(CalibrationOptions(), load_run(run_dir)))
    np.save(root / "pixels.npy", _pixels(photos, SIZE))
    jpegs = sorted(imagenet_samples_dir.glob("imagenet_*.jpg"))
    np.save(root / "jpeg_pixels.npy", _pixels(jpegs, SIZE))

    def write(*models):
        return {q if fmt == "tflite" else fmt: FORMATS.get(fmt).write(job, root / name, q) for fmt, q, name in models}

    # the TensorFlow process reads .keras and the SavedModel while TFLite converts here
    results = write(*MODELS[:2])
    common = {"pixels": str(root / "pixels.npy")}
    with_tf = _start_plain_python({**common, "keras": str(results["keras"].path),
                                   "savedmodel": str(results["savedmodel"].path), "jpegs": [str(p) for p in jpegs],
                                   "jpeg_pixels": str(root / "jpeg_pixels.npy")}, root / "tf.json")
    results.update(write(*MODELS[2:]))
    lite = _start_plain_python({**common, "tflite": {q: str(results[q].path) for q in ("none", "float16", "int8")}},
                               root / "lite.json")
    return {"expected": expected, "classes": clf.classes, "results": results,
            "tf": _answer(with_tf, root / "tf.json"), "lite": _answer(lite, root / "lite.json")}


@pytest.mark.slow
def test_every_format_matches_featcache_predict_without_featcache(orl_deployment):
    d = orl_deployment
    expected, tf_side, lite = d["expected"], d["tf"], d["lite"]
    assert tf_side["modules"] == ["tensorflow"] and lite["modules"] == []  # LiteRT alone, as on a phone

    def gap(name, side):
        return float(np.abs(np.array(side[name]) - expected).max())

    assert gap("keras", tf_side) <= 1e-4 and tf_side["keras classes"] == d["classes"]
    assert gap("savedmodel", tf_side) <= 1e-4 and tf_side["savedmodel classes"] == d["classes"]
    assert gap("none", lite) <= 1e-4
    assert gap("float16", lite) <= 1e-2
    int8 = np.array(lite["int8"])
    agreement = float(np.mean(int8.argmax(1) == expected.argmax(1)))
    assert agreement >= 0.95, agreement
    assert "training images of store" in d["results"]["int8"].calibration["source"]
    from_bytes, from_pixels = tf_side["jpeg labels"]
    p_bytes, p_pixels = (np.array(p) for p in tf_side["jpeg probabilities"])
    # a face classifier shown ImageNet photos: near-ties are common, and JPEG decoders differ by a
    # level here and there; the top class must agree wherever it leads by more than that noise
    top2 = np.sort(p_pixels, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.02
    assert len(from_bytes) == 20 and clear.sum() >= 10
    assert [b for b, c in zip(from_bytes, clear, strict=True) if c] == [q for q, c in zip(from_pixels, clear, strict=True) if c]
    assert np.abs(p_bytes - p_pixels).max() < 0.05
    sizes = {k: r.size_bytes for k, r in d["results"].items()}
    assert sizes["int8"] < sizes["float16"] < sizes["none"]


# -- featcache's own side, on the tiny test backbone -------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A logreg run of the tiny backbone (32 px) on 3 classes x 8 images, and new photos to predict."""
    root = tmp_path_factory.mktemp("tiny_formats")
    store = root / "s.zarr"
    extract(make_tree(root / "data", per_class=8), store,
            ExtractOptions(backbones=[TINY], weights="random", dtype="float32", split="60/20/20", progress=False))
    run_dir = fit_head(store, [TINY], "logreg", root / "run", progress=False).run_dir
    return Path(run_dir), make_tree(root / "new", per_class=2, start_seed=700)


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _predicted(model: Path, photos: Path) -> np.ndarray:
    result = _cli("predict", model, photos, "--json", "--top-k", "0", "-q")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    return np.array([[t["probability"] for t in sorted(r["top"], key=lambda t: t["class"])] for r in records])


def test_predict_reads_every_format_export_writes(tiny_run, tmp_path):
    run_dir, photos = tiny_run
    expected = _predicted(run_dir, photos)
    tolerance = {"none": 1e-4, "float16": 1e-2, "int8": 0.05}
    for fmt, quantize, name in MODELS:
        out = tmp_path / name
        result = _cli("export", run_dir, "--out", out, "--format", fmt, "--quantize", quantize, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["format"] == fmt and report["size_bytes"] > 0
        assert json.loads(Path(report["labels"]).read_text())["classes"] == ["blue", "green", "red"]
        if quantize == "int8":
            assert report["calibration"]["images"] >= 10 and report["calibration"]["top1_agreement_with_float"] > 0.9
        got = _predicted(out, photos)
        assert np.abs(got - expected).max() <= tolerance[quantize], (fmt, quantize)


def test_format_follows_a_tflite_out_and_text_output(tiny_run, tmp_path):
    run_dir, photos = tiny_run
    result = _cli("export", run_dir, "--out", tmp_path / "m.tflite", "--quantize", "int8",
                  "--calibration-images", run_dir.parent / "data", "--calibration-size", "5")
    assert result.exit_code == 0, result.output
    assert "exported tflite int8 model" in result.output and "m.tflite.labels.json" in result.output
    assert "int8 calibrated on 5 images from" in result.output
    assert "int8 calibration: 100%" in result.stderr and "5/5" in result.stderr  # a bar while it calibrates
    # LiteRT's C++ notes ("Created TensorFlow Lite XNNPACK delegate for CPU") are not featcache's output
    predict = subprocess.run([sys.executable, "-m", "featcache", "predict", str(tmp_path / "m.tflite"), str(photos),
                              "-q"], capture_output=True, text=True, timeout=120)
    assert predict.returncode == 0 and predict.stdout, predict.stderr
    assert predict.stderr == "", predict.stderr


@pytest.mark.parametrize("args, message", [
    (["--format", "onnx"], "--format: unknown export format 'onnx'; known: keras, savedmodel, tflite"),
    (["--quantize", "int8"], "--quantize: 'int8' is not a quantization of the keras format"),
    (["--format", "tflite", "--quantize", "int4"], "--quantize: 'int4' is not a quantization of the tflite"),
    (["--format", "tflite", "--calibration-size", "5"], "--calibration-size: only an int8 model is calibrated"),
    (["--format", "tflite", "--out", "{tmp}/m.keras"], "--out: {tmp}/m.keras: the exported tflite model file must "
                                                       "end in .tflite"),
    (["--format", "savedmodel", "--out", "{tmp}/file.txt"], "is a file; a savedmodel model is a folder"),
    (["--format", "savedmodel", "--out", "{tmp}/busy"], "is a folder holding other files"),
    (["--quantize", "int8", "--out", "{tmp}/m.tflite", "--calibration-images", "{tmp}/busy"],
     "--calibration-images: no image files in"),
])
def test_export_refuses_bad_format_options(tiny_run, tmp_path, args, message):
    run_dir, _ = tiny_run
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("not a model")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = [] if "--out" in args else ["--out", tmp_path / "m.keras"]
    result = _cli("export", run_dir, *out, *args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert message.replace("{tmp}", str(tmp_path)) in result.output


def test_int8_without_the_store_says_what_to_do(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    store = tmp_path / "gone.zarr"  # a copy of the store, fitted on, then deleted (config.json is bound by its digest)
    shutil.copytree(load_run(run_dir).config.store_path, store)
    moved = Path(fit_head(store, [TINY], "logreg", tmp_path / "run", progress=False).run_dir)
    shutil.rmtree(store)
    result = _cli("export", moved, "--out", tmp_path / "m.tflite", "--quantize", "int8")
    assert result.exit_code == 2 and "gone.zarr does not exist" in result.output
    assert "--calibration-images DIR" in result.output


@pytest.mark.parametrize("name", ["m.tflite", "m_savedmodel/saved_model.pb"])
def test_damaged_exported_model_is_refused(tmp_path, name):
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"not a model at all")
    model = path if path.suffix == ".tflite" else path.parent
    (tmp_path / f"{model.stem}.labels.json").write_text('{"classes": ["a", "b"]}')
    result = _cli("predict", model, tmp_path)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"{model}: cannot load as a" in result.output


def test_bgr_preprocessing_is_keras_own_layers_and_exact():
    """caffe's channel reversal + per-channel affine, built from Rescaling and a frozen Dense."""
    import keras

    from featcache.serve.layers import preprocessing

    pre = PREPROCESS["caffe"]
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, preprocessing(inputs, pre, "preprocess"))
    assert {type(layer).__module__.split(".")[0] for layer in model.layers} == {"keras"}
    x = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype(np.float32)
    assert np.abs(np.asarray(model.predict_on_batch(x)) - pre(x)).max() <= 1e-4


def test_a_featcache_0_1_export_still_loads(tmp_path):
    """The custom-layer .keras files featcache 0.1 wrote: class names from their class_names layer."""
    import keras

    from featcache.serve.layers import ChannelAffine, ClassNames

    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(ChannelAffine.from_preprocess(PREPROCESS["tf"])(inputs))
    probs = ClassNames(["cat", "dog"], name="class_names")(keras.layers.Dense(2, activation="softmax")(x))
    keras.Model(inputs, probs).save(tmp_path / "old.keras")
    clf = load_classifier(tmp_path / "old.keras")
    assert clf.classes == ["cat", "dog"]


# -- exports replaced in one step, one sidecar per model, bounded archives (issue 21, findings 4 and 7) ----

def _tree_bytes(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", ["clf.keras", "clf_savedmodel"])
def test_a_killed_export_leaves_the_previous_export_whole(tiny_run, tmp_path, monkeypatch, name):
    """Finding 4: Keras wrote the path in place, so a kill left a 0-byte .keras where a good one was."""
    import keras

    from featcache.serve.formats import keras_file

    run_dir, photos = tiny_run
    out, fmt = tmp_path / name, "keras" if name.endswith(".keras") else "savedmodel"
    assert _cli("export", run_dir, "--out", out, "--format", fmt).exit_code == 0
    before, sidecar = _tree_bytes(out), (tmp_path / f"{name}.labels.json").read_bytes()
    expected = _predicted(out, photos)

    def kill(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill once the new model's bytes are (partly) written

    if name.endswith(".keras"):
        monkeypatch.setattr(keras_file, "_add_metadata", kill)
    else:
        archive = type(keras.export.ExportArchive())  # the backend's class, which ExportArchive() makes
        write_out = archive.write_out

        def killed_midway(self, path, **kwargs):  # saved_model.pb written, the variables not yet
            write_out(self, path, **kwargs)
            shutil.rmtree(Path(path) / "variables")
            kill()

        monkeypatch.setattr(archive, "write_out", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        from featcache.serve.export import export
        export(run_dir, out, format=fmt)
    monkeypatch.undo()
    assert _tree_bytes(out) == before and (tmp_path / f"{name}.labels.json").read_bytes() == sidecar
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f"{name}.labels.json"]), "no temporary left"
    assert np.array_equal(_predicted(out, photos), expected)


def test_each_model_has_its_own_sidecar_and_a_sidecar_of_another_model_is_refused(tiny_run, tmp_path):
    """Exporting tux.keras then tux.tflite wrote one shared tux.labels.json: the second export
    relabelled the first model."""
    run_dir, photos = tiny_run
    for name in ("tux.keras", "tux.tflite"):
        assert _cli("export", run_dir, "--out", tmp_path / name).exit_code == 0
    sidecars = sorted(p.name for p in tmp_path.glob("*.labels.json"))
    assert sidecars == ["tux.keras.labels.json", "tux.tflite.labels.json"]
    for name in sidecars:
        assert json.loads((tmp_path / name).read_text())["classes"] == ["blue", "green", "red"]
    (tmp_path / "tux.tflite.labels.json").write_bytes((tmp_path / "tux.keras.labels.json").read_bytes())
    result = _cli("predict", tmp_path / "tux.tflite", photos)
    assert result.exit_code == 2 and "was written for another version of" in result.output, result.output


def test_a_keras_archive_whose_member_would_inflate_far_beyond_its_size_is_refused_unread(tmp_path):
    """Finding 7: a 2 MB .keras inflating to 2 GiB took 120 s before it was refused."""
    import zipfile

    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.weights.h5", bytes(80 << 20))  # 80 MiB of zeros: about 80 KB stored
    assert bomb.stat().st_size < 1 << 20
    result = _cli("predict", bomb, tmp_path)
    assert result.exit_code == 2 and "would inflate" in result.output and "Traceback" not in result.output
