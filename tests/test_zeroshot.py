"""The zeroshot head on a tiny CLIP built by keras-hub itself (random weights, with a tokenizer of
a few dozen BPE tokens) saved as a local preset: its probabilities against keras-hub's own CLIP
model call on the same photos and prompts, export + predict, compare beside logreg, and the one-line
refusal of a configuration without a text tower."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_tree

keras_hub = pytest.importorskip("keras_hub")

from featcache.backbones import register_backbone  # noqa: E402
from featcache.backbones.keras_hub import arch_of_preset, hub_backbone  # noqa: E402
from featcache.cli import cli  # noqa: E402
from featcache.extraction import ExtractOptions, extract  # noqa: E402
from featcache.heads.zeroshot import class_text  # noqa: E402
from featcache.ingest.decode import read_image  # noqa: E402
from featcache.train.run import load_run  # noqa: E402

TEMPLATES = ["a photo of a {}.", "a picture of the {}."]


def _tokenizer():
    """A BPE vocabulary of single letters (word-final or not) and two merges; CLIP's special tokens
    last, as in CLIP's own vocabulary (its text pooler takes the highest id as the end token)."""
    vocab = {}
    for c in list(string.ascii_lowercase) + ["."]:
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    merges = ["p h", "o t"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    return keras_hub.models.CLIPTokenizer(vocabulary=vocab, merges=merges), len(vocab)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(5)
    root = tmp_path_factory.mktemp("zs")
    tokenizer, size = _tokenizer()
    model = keras_hub.models.CLIPBackbone(
        keras_hub.models.CLIPVisionEncoder(patch_size=8, hidden_dim=32, num_layers=2, num_heads=2,
                                           intermediate_dim=64, image_shape=(32, 32, 3)),
        keras_hub.models.CLIPTextEncoder(vocabulary_size=size, embedding_dim=32, hidden_dim=32, num_layers=2,
                                         num_heads=2, intermediate_dim=64, max_sequence_length=24),
        projection_dim=24)
    folder = root / "clip"
    model.save_to_preset(str(folder))
    tokenizer.save_to_preset(str(folder))
    keras_hub.layers.CLIPImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0).save_to_preset(str(folder))
    register_backbone(hub_backbone("tiny_clip_text", str(folder), arch_of_preset(folder)), replace=True)
    data = make_tree(root / "data", per_class=4)
    store = root / "s.zarr"
    extract(data, store, ExtractOptions(backbones=("tiny_clip_text",), pooling="embedding", dtype="float32",
                                        split="50/25/25", progress=False))
    extract(data, store, ExtractOptions(backbones=("tiny_clip_text",), pooling="avg", dtype="float32",
                                        split="50/25/25", progress=False))
    prompts = root / "prompts.txt"
    prompts.write_text("# two templates, averaged\n" + "\n".join(TEMPLATES) + "\n")
    return {"folder": folder, "data": data, "store": store, "prompts": prompts, "root": root}


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _key(store, pooling):
    result = _invoke("info", store, "--json")
    keys = [c["key"] for c in json.loads(result.stdout)["configs"] if f"-{pooling}-" in c["key"]]
    assert len(keys) == 1, result.stdout
    return keys[0]


def test_probabilities_are_keras_hub_clip_logits_softmaxed(tiny):
    """fit-head --head zeroshot on the store: predict's probabilities on new photos equal
    softmax(logit_scale * cos(image, text)) from keras-hub's own CLIPBackbone (its two towers and
    its logit scale, through its own preprocessor), with a class's prompts averaged as CLIP does."""
    key, run = _key(tiny["store"], "embedding"), tiny["root"] / "run"
    result = _invoke("fit-head", tiny["store"], "-b", key, "--head", "zeroshot", "--prompts-file", tiny["prompts"],
                     "--out", run, "-q")
    assert result.exit_code == 0, result.output
    loaded = load_run(run)
    classes = loaded.config.classes
    photos = sorted(p for p in (make_tree(tiny["root"] / "new", per_class=1, start_seed=700)).rglob("*.*") if p.is_file())

    model = keras_hub.models.Backbone.from_preset(str(tiny["folder"]))
    pre = keras_hub.models.CLIPPreprocessor(keras_hub.models.CLIPTokenizer.from_preset(str(tiny["folder"])),
                                            sequence_length=24)
    converter = keras_hub.layers.CLIPImageConverter.from_preset(str(tiny["folder"]))
    images = np.stack([read_image(p, 32) for p in photos]).astype("float32")  # featcache's decode + resize
    text = []
    for c in classes:
        ids = pre({"images": None, "prompts": [t.format(class_text(c)) for t in TEMPLATES]})["token_ids"]
        e = np.asarray(model.get_text_embeddings(ids), np.float64)
        e = (e / np.linalg.norm(e, axis=1, keepdims=True)).mean(axis=0)
        text.append(e / np.linalg.norm(e))
    image = np.asarray(model.get_vision_embeddings(converter(images)), np.float64)
    # keras-hub's own head on (image, the class embeddings): its logit scale, its normalisation
    logits = np.asarray(model.clip_head(image.astype("float32"), np.stack(text).astype("float32"))[0], np.float64)
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    want = z / z.sum(axis=1, keepdims=True)

    got = _probabilities(run, photos)
    assert np.abs(got - want).max() <= 1e-4
    assert loaded.head.summary()["prompts"] == TEMPLATES
    assert loaded.head.summary()["logit_scale"] == pytest.approx(float(np.exp(model.clip_head.logit_scale)), rel=1e-6)
    # the exported model (backbone + unit normalisation + one softmax Dense) gives the same numbers
    out = tiny["root"] / "zs.keras"
    result = _invoke("export", run, "--out", out, "--format", "keras", "-q")
    assert result.exit_code == 0, result.output
    assert np.abs(_probabilities(out, photos) - want).max() <= 1e-4


def _probabilities(model: Path, photos: list[Path]) -> np.ndarray:
    result = _invoke("predict", model, *photos, "--json", "--top-k", "0", "-q")
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).name: r for r in json.loads(result.stdout)}
    return np.array([[t["probability"] for t in sorted(rows[p.name]["top"], key=lambda t: t["class"])]
                     for p in photos])


def test_compare_shows_zeroshot_beside_logreg(tiny):
    key = _key(tiny["store"], "embedding")
    result = _invoke("compare", tiny["store"], "-b", key, "--head", "logreg", "--head", "zeroshot", "--json", "-q")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    entries = rows["leaderboard"]
    assert {e["head"] for e in entries} == {"logreg", "zeroshot"}
    assert all(e["val_accuracy"] is not None for e in entries)


@pytest.mark.parametrize("what", ["no text tower", "another pooling"])
def test_a_configuration_without_a_text_embedding_is_refused_in_one_line(tiny, tmp_path, what):
    if what == "no text tower":
        store = tmp_path / "cnn.zarr"
        extract(tiny["data"], store, ExtractOptions(backbones=("tiny_test",), dtype="float32", split="50/25/25",
                                                    progress=False))
        key = None
    else:
        store, key = tiny["store"], _key(tiny["store"], "avg")
    args = ["fit-head", store, "--head", "zeroshot", "--out", tmp_path / "run", "-q"] + (["-b", key] if key else [])
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "zeroshot" in lines[0], result.output
    assert ("has none" if what == "no text tower" else "embedding") in lines[0]
    assert not (tmp_path / "run").exists()
