"""keras-hub vision transformers as backbones, offline: tiny randomly initialised DINOv2 and CLIP
networks built by keras-hub itself and saved as local presets (save_to_preset), through extract,
fit-head, export and predict; the record; the poolings against keras-hub's own model calls; the
one-line error for a preset that is neither cached nor downloadable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_tree

keras_hub = pytest.importorskip("keras_hub")

from featcache.backbones import register_backbone  # noqa: E402
from featcache.backbones.keras_hub import PRESETS, arch_of_preset, hub_backbone  # noqa: E402
from featcache.backbones.model import build_feature_extractor, known_feature_dim, resolve_config  # noqa: E402
from featcache.cli import cli  # noqa: E402
from featcache.errors import FeatcacheError, ParameterError  # noqa: E402
from featcache.extraction import ExtractOptions, extract  # noqa: E402
from featcache.train.fit import fit_head  # noqa: E402

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _save(backbone, converter, folder: Path) -> Path:
    backbone.save_to_preset(str(folder))
    converter.save_to_preset(str(folder))
    return folder


@pytest.fixture(scope="module")
def presets(tmp_path_factory) -> dict[str, Path]:
    """Two layers, width 32: a DINOv2 with a register token (patch 14, 28 px) and a CLIP (patch 8,
    32 px, projection 24), registered as featcache backbones from their local preset folders."""
    import keras

    keras.utils.set_random_seed(3)
    root = tmp_path_factory.mktemp("hub_presets")
    dino = _save(keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64, num_register_tokens=1,
        image_shape=(28, 28, 3), position_embedding_shape=(28, 28, 3)),
        keras_hub.layers.DINOV2ImageConverter(image_size=(28, 28), scale=list(1 / (255 * STD)),
                                              offset=list(-MEAN / STD)), root / "dino")
    clip = keras_hub.models.CLIPBackbone(
        keras_hub.models.CLIPVisionEncoder(patch_size=8, hidden_dim=32, num_layers=2, num_heads=2,
                                           intermediate_dim=64, image_shape=(32, 32, 3)),
        keras_hub.models.CLIPTextEncoder(vocabulary_size=50, embedding_dim=32, hidden_dim=32, num_layers=2,
                                         num_heads=2, intermediate_dim=64, max_sequence_length=8),
        projection_dim=24)
    clip = _save(clip, keras_hub.layers.CLIPImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0),
                 root / "clip")
    for name, folder in (("tiny_dinov2", dino), ("tiny_clip", clip)):
        register_backbone(hub_backbone(name, str(folder), arch_of_preset(folder)), replace=True)
    return {"tiny_dinov2": dino, "tiny_clip": clip}


def test_the_record_carries_the_preset_its_digests_and_its_converter_numbers(presets):
    config = resolve_config("tiny_dinov2", pooling="cls_avg")
    details = config.details_dict
    assert details["source"] == "keras-hub" and details["patch_size"] == 14
    assert details["keras_hub_version"] == keras_hub.__version__
    assert set(details["weight_files"]) == {"config.json", "model.weights.h5"}
    assert config.weights_id.startswith("sha256:") and config.input_size == 224
    assert np.allclose(config.preprocess.scale, 1 / (255 * STD)) and np.allclose(config.preprocess.offset, -MEAN / STD)
    # the identity holds what the features depend on, not where the same files were found
    assert "preset" not in config.identity()["details"] and "weight_files" in config.identity()["details"]
    again = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and hash(again) == hash(config)


@pytest.mark.parametrize("pooling, dim", [("cls", 32), ("avg", 32), ("cls_avg", 64)])
def test_dinov2_poolings_are_keras_hub_tokens_pooled(presets, pooling, dim):
    """At 42 px (position embeddings interpolated by keras-hub's image_shape= at load): featcache's
    features equal the pooled tokens of keras-hub's own model."""
    config = resolve_config("tiny_dinov2", 42, pooling)
    model = build_feature_extractor(config)
    x = np.random.default_rng(0).normal(size=(2, 42, 42, 3)).astype("float32")
    tokens = np.asarray(keras_hub.models.Backbone.from_preset(str(presets["tiny_dinov2"]), image_shape=(42, 42, 3))(x))
    cls, mean = tokens[:, 0], tokens[:, 2:].mean(axis=1)  # CLS, one register, 9 patches
    want = {"cls": cls, "avg": mean, "cls_avg": np.concatenate([cls, mean], axis=1)}[pooling]
    got = np.asarray(model.predict_on_batch(x))
    assert got.shape == (2, dim) == (2, known_feature_dim(config))
    assert np.abs(got - want).max() <= 1e-5


def test_clip_embedding_is_keras_hub_projected_image_embedding(presets):
    config = resolve_config("tiny_clip", pooling="embedding")
    assert config.input_size == 32 and known_feature_dim(config) == 24
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    backbone = keras_hub.models.Backbone.from_preset(str(presets["tiny_clip"]))
    want = np.asarray(backbone.get_vision_embeddings(x))
    assert np.abs(np.asarray(build_feature_extractor(config).predict_on_batch(x)) - want).max() <= 1e-5
    with pytest.raises(ParameterError, match="only 32"):  # keras-hub interpolates only DINOv2's positions
        resolve_config("tiny_clip", 48, "embedding")


def test_tapped_transformer_layers_are_blocks(presets):
    from featcache.backbones.model import block_shapes, tap_configs

    base = resolve_config("tiny_dinov2", 28, "cls")
    assert [b for b in block_shapes(base) if b.startswith("layers_")] == ["layers_0", "layers_1"]
    (tap,) = tap_configs(base, ("layers_0",))
    assert build_feature_extractor(tap).output.shape[-1] == known_feature_dim(tap) == 32


@pytest.mark.parametrize("name, pooling", [("tiny_dinov2", "cls_avg"), ("tiny_clip", "embedding")])
def test_extract_fit_export_predict(presets, tmp_path, name, pooling):
    """The tiny preset through the whole pipeline; every exported format predicts fit-head's
    probabilities (TFLite: or refuses in one clear line)."""
    data, store = make_tree(tmp_path / "data", per_class=4), tmp_path / "s.zarr"
    extract(data, store, ExtractOptions(backbones=(name,), pooling=pooling, dtype="float32", split="50/25/25",
                                        image_size=28 if name == "tiny_dinov2" else None, progress=False))
    run = Path(fit_head(store, [name], "logreg", tmp_path / "run", progress=False).run_dir)
    photos = make_tree(tmp_path / "new", per_class=1, start_seed=900)
    expected = _probabilities(run, photos)
    for fmt, out in (("keras", "m.keras"), ("savedmodel", "sm"), ("tflite", "m.tflite")):
        result = CliRunner().invoke(cli, ["export", str(run), "--out", str(tmp_path / out), "--format", fmt, "-q"])
        if fmt == "tflite" and result.exit_code != 0:
            assert result.exit_code == 2 and result.output.count("error:") == 1, result.output
            continue
        assert result.exit_code == 0, (fmt, result.output)
        assert np.abs(_probabilities(tmp_path / out, photos) - expected).max() <= 1e-4, fmt


def _probabilities(model: Path, photos: Path) -> np.ndarray:
    result = CliRunner().invoke(cli, ["predict", str(model), str(photos), "--json", "--top-k", "0", "-q"])
    assert result.exit_code == 0, result.output
    return np.array([[t["probability"] for t in sorted(r["top"], key=lambda t: t["class"])]
                     for r in json.loads(result.stdout)])


def test_a_local_preset_of_another_shape_is_refused_as_a_named_backbones_weights(presets):
    with pytest.raises(ParameterError, match="another shape"):
        resolve_config("dinov2_small", weights=str(presets["tiny_dinov2"]))


def test_offline_uncached_preset_is_one_line_with_the_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FeatcacheError) as caught:
        resolve_config("dinov2_small")
    assert "dinov2_small" in str(caught.value) and str(tmp_path / "cache") in str(caught.value)
    result = CliRunner().invoke(cli, ["extract", str(make_tree(tmp_path / "d", per_class=1)), "--store",
                                      str(tmp_path / "s.zarr"), "-b", "dinov2_small", "-q"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--weights" in lines[0], result.output
    assert str(tmp_path / "cache") in lines[0] and "dinov2_small" in lines[0]


def test_parameter_counts_are_keras_hub_own_builds(presets):
    """The declared counts follow from the tower's shape by one formula per family, checked here
    against keras-hub's own (tiny) builds, and DINOv2 ViT-S/14 against keras-hub's published count
    (22,582,656 at 518 px, which holds the 518-px position embeddings twice)."""
    from featcache.backbones.keras_hub import Arch

    def trainable(*parts) -> int:  # not the constants (position ids, interpolated embeddings)
        return sum(int(np.prod(w.shape)) for p in parts for w in p.trainable_weights)

    dino = keras_hub.models.Backbone.from_preset(str(presets["tiny_dinov2"]))
    assert arch_of_preset(presets["tiny_dinov2"]).count_parameters() == trainable(dino)
    clip = keras_hub.models.Backbone.from_preset(str(presets["tiny_clip"]))
    assert arch_of_preset(presets["tiny_clip"]).count_parameters() == trainable(clip.vision_encoder,
                                                                                 clip.vision_projection)
    siglip = keras_hub.models.SigLIPVisionEncoder(patch_size=8, hidden_dim=32, num_layers=2, num_heads=2,
                                                  intermediate_dim=64, image_shape=(32, 32, 3))
    assert Arch("siglip", 8, 32, 2, 2, 64, 32, embedding_dim=32).count_parameters() == trainable(siglip)
    small = PRESETS["dinov2_small"][1]
    assert small.count_parameters() + (518 // 14) ** 2 * 384 + 384 == 22_582_656


def test_backbones_json_lists_the_families():
    result = CliRunner().invoke(cli, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {r["family"] for r in rows.values()} >= {"dinov2", "dinov3", "siglip", "clip", "cnn"}
    for name in ("dinov2_small", "dinov2_small_reg", "dinov3_base", "siglip_base_patch16_224",
                 "siglip2_base_patch16_224", "clip_vit_base_patch16"):
        assert rows[name]["patch_size"] and rows[name]["parameters"] and "weights_available" in rows[name]
    assert rows["dinov2_small"]["own_pooling"] == "cls_avg" and rows["dinov2_small"]["own_pooling_dim"] == 768
    assert rows["clip_vit_base_patch16"]["own_pooling_dim"] == 512


def test_dinov3_random_network_needs_no_preset_on_this_machine():
    """Taps and `backbones --blocks` build a random network of the declared shape; DINOv3 builds
    one offline too (keras-hub's DINOV3Backbone, no key bias as in the released ViTs: ViT-S/16 has
    keras-hub's published 21.6 M parameters)."""
    from featcache.backbones.keras_hub import Arch
    from featcache.backbones.model import block_shapes, tap_configs

    register_backbone(hub_backbone("tiny_dinov3_offline", "dinov3_not_cached_here",
                                   Arch("dinov3", 16, 32, 2, 2, 64, 32, 4)), replace=True)
    base = resolve_config("tiny_dinov3_offline", 32, "cls_avg", weights="random")
    shapes = block_shapes(base)
    assert [b for b in shapes if b.startswith("layers_")] == ["layers_0", "layers_1"]
    assert shapes["layers_1"] == (1 + 4 + 4, 32)  # CLS, 4 registers, 2 x 2 patches
    (tap,) = tap_configs(base, ("layers_0",))
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    assert np.asarray(build_feature_extractor(tap).predict_on_batch(x)).shape == (2, 64)
    small = PRESETS["dinov3_small"][1].random_tower(224)
    assert round(sum(int(np.prod(w.shape)) for w in small.trainable_weights), -5) == 21_600_000


def test_siglip_preprocessing_and_embedding_are_keras_hub_own(tmp_path):
    """A tiny SigLIP preset: featcache's decode, preprocessing numbers (read from the preset's image
    converter) and `embedding` pooling on photos equal keras-hub's own image converter and
    get_vision_embeddings (its attention-pooling head) on the same random weights."""
    import keras

    from featcache.ingest.decode import read_image

    keras.utils.set_random_seed(5)
    vision = keras_hub.models.SigLIPVisionEncoder(patch_size=8, hidden_dim=32, num_layers=2, num_heads=2,
                                                  intermediate_dim=64, image_shape=(32, 32, 3))
    text = keras_hub.models.SigLIPTextEncoder(vocabulary_size=50, embedding_dim=32, hidden_dim=32, num_layers=2,
                                              num_heads=2, intermediate_dim=64, max_sequence_length=8)
    folder = _save(keras_hub.models.SigLIPBackbone(vision, text),
                   keras_hub.layers.SigLIPImageConverter(image_size=(32, 32), scale=1 / 127.5, offset=-1.0),
                   tmp_path / "siglip")
    register_backbone(hub_backbone("tiny_siglip", str(folder), arch_of_preset(folder)), replace=True)
    config = resolve_config("tiny_siglip", pooling="embedding")
    assert np.allclose(config.preprocess.scale, 1 / 127.5) and np.allclose(config.preprocess.offset, -1.0)
    photos = sorted(p for p in make_tree(tmp_path / "photos", per_class=1).rglob("*.*") if p.is_file())
    images = np.stack([read_image(p, 32) for p in photos]).astype("float32")
    got = np.asarray(build_feature_extractor(config).predict_on_batch(config.preprocess(images)))
    model = keras_hub.models.Backbone.from_preset(str(folder))
    converter = keras_hub.layers.SigLIPImageConverter.from_preset(str(folder))
    want = np.asarray(model.get_vision_embeddings(converter(images)))
    assert got.shape == (len(photos), 32) == (len(photos), known_feature_dim(config))
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def test_random_clip_tower_numbers_its_positions_as_the_presets_do():
    """keras-hub builds CLIP's position ids as zeros (its presets' weight files hold 0..N); the
    random tower featcache builds numbers them 0..N, so every token gets its own position."""
    from featcache.backbones.keras_hub import Arch

    tower, _ = Arch("clip", 8, 32, 2, 2, 64, 32, embedding_dim=24).random_tower(32)
    assert np.asarray(tower.embedding.position_ids).tolist() == [list(range(17))]
