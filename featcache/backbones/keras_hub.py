"""Vision transformers through keras-hub: DINOv2 (with and without registers), DINOv3, SigLIP,
SigLIP 2 and CLIP image towers, as registered backbones.

keras-hub (an optional dependency, ``pip install featcache[hub]``) owns the networks, their
presets, the download and cache (kagglehub) and the Hugging Face converters; this module only
rewires a loaded network so each transformer layer is a layer of one functional model (so taps
and fine-tuning see the layers as blocks, as they see a CNN's) and records what the features
depend on: the preset's weight-file digests, its image converter's numbers, the input and patch
size, the keras-hub version.

A ViT gives tokens, not a feature map. Its trunk's output is the final (normalised) token
sequence, and, for the families that have one, the model's own pooled embedding (SigLIP's
attention-pooling head, CLIP's projected image embedding) as a second output; the poolings of
``spec.TOKEN_POOLINGS`` choose among them (``model._pooled``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import FeatcacheError, ParameterError
from ..install import pip_install
from .spec import BackboneSpec, Preprocess, WeightsRecord

PRESET_CONFIG = "config.json"  # what save_to_preset writes, and a Hugging Face checkpoint's config
PRESET_WEIGHTS = "model.weights.h5"
HF_WEIGHTS = "model.safetensors"
CONVERTER_FILE = "image_converter.json"
INSTALL = f"install keras-hub ({pip_install('featcache[hub]')})"


def hub_available() -> bool:
    return importlib.util.find_spec("keras_hub") is not None


def hub_version() -> str:
    try:
        return importlib.metadata.version("keras-hub")
    except importlib.metadata.PackageNotFoundError:
        return ""


def imagenet_like(name: str, mean, std) -> Preprocess:
    """Normalisation by a mean and std given for 0-1 pixels, as the families' converters do it."""
    return Preprocess(name, tuple(1 / (255.0 * s) for s in std), tuple(-m / s for m, s in zip(mean, std, strict=True)))


# The families' image converters, as keras-hub's presets configure them (0-255 in). A preset's own
# image_converter.json, when it is on this machine, is what a record takes its numbers from.
FAMILY_PREPROCESS = {
    "dinov2": imagenet_like("dinov2", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "dinov3": imagenet_like("dinov3", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "siglip": Preprocess("siglip", (1 / 127.5,) * 3, (-1.0,) * 3),
    "clip": imagenet_like("clip", (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
# Each family's poolings, its own first (what its published linear probe or embedding uses).
FAMILY_POOLINGS = {
    "dinov2": ("cls_avg", "cls", "avg", "max"),
    "dinov3": ("cls_avg", "cls", "avg", "max"),
    "siglip": ("embedding", "avg", "max"),
    "clip": ("embedding", "cls", "avg", "max"),
}
# Only DINOv2 interpolates its position embeddings (keras-hub's image_shape= at load); DINOv3's
# rotary embeddings take any multiple of the patch; SigLIP and CLIP run at their preset's size.
RESIZABLE = {"dinov2", "dinov3"}
_CLASSES = {"dinov2": "DINOV2Backbone", "dinov3": "DINOV3Backbone", "siglip": "SigLIPBackbone",
            "clip": "CLIPBackbone"}


@dataclass(frozen=True)
class Arch:
    """A ViT image tower's shape: what feature sizes and parameter counts follow from."""

    family: str
    patch_size: int
    hidden_dim: int
    num_layers: int
    num_heads: int
    intermediate_dim: int
    image_size: int  # the preset's own input size (DINOv2: its position-embedding grid)
    registers: int = 0
    embedding_dim: int = 0  # the model's own pooled embedding (0: the family has none)
    swiglu: bool = False
    parameters: int | None = None  # when no formula below holds (DINOv3: keras-hub's published count)

    @property
    def prefix_tokens(self) -> int:
        """Tokens before the patch tokens: the CLS token and the registers (SigLIP has neither)."""
        return 0 if self.family == "siglip" else 1 + self.registers

    def count_parameters(self) -> int | None:
        """Weights of the image tower (trainable, at the preset's size: a resized DINOv2 holds its
        interpolated position embeddings as a constant besides). Checked against keras-hub's own
        builds in the tests."""
        if self.parameters is not None:
            return self.parameters
        d, m, p, n = self.hidden_dim, self.intermediate_dim, self.patch_size, (self.image_size // self.patch_size) ** 2
        if self.family == "dinov2" and not self.swiglu:
            stem = p * p * 3 * d + d + 2 * d + self.registers * d + (n + 1) * d  # conv, cls, mask, registers, pos
            return stem + self.num_layers * (4 * d * d + 2 * d * m + m + 11 * d) + 2 * d
        block = 4 * d * d + 2 * d * m + m + 9 * d
        if self.family == "siglip":
            head = d + 4 * d * d + 4 * d + 2 * d + 2 * d * m + m + d  # probe, attention, norm, mlp
            return p * p * 3 * d + d + n * d + self.num_layers * block + 2 * d + head
        if self.family == "clip":
            stem = p * p * 3 * d + d + (n + 1) * d + 2 * d  # conv (no bias), cls, pos, pre-norm
            return stem + self.num_layers * block + 2 * d + d * self.embedding_dim
        return None

    def random_tower(self, image_size: int):
        """keras-hub's own network of this shape, randomly initialised (nothing downloaded)."""
        import keras_hub
        import numpy as np

        common = dict(patch_size=self.patch_size, hidden_dim=self.hidden_dim, num_layers=self.num_layers,
                      num_heads=self.num_heads, intermediate_dim=self.intermediate_dim,
                      image_shape=(image_size, image_size, 3))
        if self.family == "dinov2":
            return keras_hub.models.DINOV2Backbone(
                **common, num_register_tokens=self.registers, use_swiglu_ffn=self.swiglu,
                position_embedding_shape=(self.image_size, self.image_size, 3))
        if self.family == "dinov3":  # the released ViTs' biases: no key bias (transformers' default too)
            return keras_hub.models.DINOV3Backbone(**common, num_register_tokens=self.registers,
                                                   use_gated_mlp=self.swiglu, use_key_bias=False)
        if self.family == "siglip":
            return keras_hub.models.SigLIPVisionEncoder(**common)
        if self.family == "clip":
            tower = keras_hub.models.CLIPVisionEncoder(**common)
            # keras-hub starts the position ids at zeros (a preset's weight file holds 0..N): as the presets
            ids = tower.embedding.position_ids
            ids.assign(np.arange(ids.shape[1], dtype="int64")[None].astype(ids.dtype))
            return tower, self.embedding_dim
        raise FeatcacheError(f"no random {self.family} network without its preset's configuration")


def _dino(d, layers, heads, mlp, registers=0, swiglu=False):
    return Arch("dinov2", 14, d, layers, heads, mlp, 518, registers, swiglu=swiglu)


def _siglip(patch, size, d, layers, heads, mlp):
    return Arch("siglip", patch, d, layers, heads, mlp, size, embedding_dim=d)


def _clip(patch, size, d, layers, heads, mlp, proj):
    return Arch("clip", patch, d, layers, heads, mlp, size, embedding_dim=proj)


def _dino3(d, layers, heads, mlp, parameters, swiglu=False):
    return Arch("dinov3", 16, d, layers, heads, mlp, 224, 4, swiglu=swiglu, parameters=parameters)


_SIGLIP_B, _SIGLIP_L = (768, 12, 12, 3072), (1024, 24, 16, 4096)
_SO400M, _GIANT = (1152, 27, 16, 4304), (1536, 40, 16, 6144)

# featcache name -> (keras-hub preset, the tower's shape). The presets are keras-hub 0.32's
# (keras_hub/src/models/*/*_presets.py); names a user can guess: keras-hub's where they are.
PRESETS: dict[str, tuple[str, Arch]] = {
    "dinov2_small": ("dinov2_small", _dino(384, 12, 6, 1536)),
    "dinov2_base": ("dinov2_base", _dino(768, 12, 12, 3072)),
    "dinov2_large": ("dinov2_large", _dino(1024, 24, 16, 4096)),
    "dinov2_giant": ("dinov2_giant", _dino(1536, 40, 24, 4096, swiglu=True)),
    "dinov2_small_reg": ("dinov2_with_registers_small", _dino(384, 12, 6, 1536, 4)),
    "dinov2_base_reg": ("dinov2_with_registers_base", _dino(768, 12, 12, 3072, 4)),
    "dinov2_large_reg": ("dinov2_with_registers_large", _dino(1024, 24, 16, 4096, 4)),
    "dinov2_giant_reg": ("dinov2_with_registers_giant", _dino(1536, 40, 24, 4096, 4, swiglu=True)),
    # DINOv3's parameter counts are keras-hub's published (rounded) figures
    "dinov3_small": ("dinov3_vit_small_lvd1689m", _dino3(384, 12, 6, 1536, 21_600_000)),
    "dinov3_small_plus": ("dinov3_vit_small_plus_lvd1689m", _dino3(384, 12, 6, 1536, 29_000_000, swiglu=True)),
    "dinov3_base": ("dinov3_vit_base_lvd1689m", _dino3(768, 12, 12, 3072, 86_000_000)),
    "dinov3_large": ("dinov3_vit_large_lvd1689m", _dino3(1024, 24, 16, 4096, 300_000_000)),
    "dinov3_huge_plus": ("dinov3_vit_huge_plus_lvd1689m", _dino3(1280, 32, 20, 5120, 840_000_000, swiglu=True)),
    "dinov3_7b": ("dinov3_vit_7b_lvd1689m", _dino3(4096, 40, 32, 8192, 6_700_000_000, swiglu=True)),
    "dinov3_large_sat": ("dinov3_vit_large_sat493m", _dino3(1024, 24, 16, 4096, 300_000_000)),
    "dinov3_7b_sat": ("dinov3_vit_7b_sat493m", _dino3(4096, 40, 32, 8192, 6_700_000_000, swiglu=True)),
    **{f"siglip_base_patch16_{s}": (f"siglip_base_patch16_{s}", _siglip(16, s, *_SIGLIP_B))
       for s in (224, 256, 384, 512)},
    **{f"siglip_large_patch16_{s}": (f"siglip_large_patch16_{s}", _siglip(16, s, *_SIGLIP_L)) for s in (256, 384)},
    **{f"siglip_so400m_patch14_{s}": (f"siglip_so400m_patch14_{s}", _siglip(14, s, *_SO400M)) for s in (224, 384)},
    "siglip_so400m_patch16_256_i18n": ("siglip_so400m_patch16_256_i18n", _siglip(16, 256, *_SO400M)),
    "siglip_base_patch16_256_multilingual": ("siglip_base_patch16_256_multilingual",
                                             _siglip(16, 256, *_SIGLIP_B)),
    **{f"siglip2_base_patch16_{s}": (f"siglip2_base_patch16_{s}", _siglip(16, s, *_SIGLIP_B))
       for s in (224, 256, 384)},
    "siglip2_base_patch32_256": ("siglip2_base_patch32_256", _siglip(32, 256, *_SIGLIP_B)),
    **{f"siglip2_large_patch16_{s}": (f"siglip2_large_patch16_{s}", _siglip(16, s, *_SIGLIP_L))
       for s in (256, 384, 512)},
    **{f"siglip2_giant_opt_patch16_{s}": (f"siglip2_giant_opt_patch16_{s}", _siglip(16, s, *_GIANT))
       for s in (256, 384)},
    **{f"siglip2_so400m_patch14_{s}": (f"siglip2_so400m_patch14_{s}", _siglip(14, s, *_SO400M)) for s in (224, 384)},
    **{f"siglip2_so400m_patch16_{s}": (f"siglip2_so400m_patch16_{s}", _siglip(16, s, *_SO400M))
       for s in (256, 384, 512)},
    "medsiglip_448": ("medsiglip_900m_448", _siglip(14, 448, *_SO400M)),
    "clip_vit_base_patch16": ("clip_vit_base_patch16", _clip(16, 224, 768, 12, 12, 3072, 512)),
    "clip_vit_base_patch32": ("clip_vit_base_patch32", _clip(32, 224, 768, 12, 12, 3072, 512)),
    "clip_vit_large_patch14": ("clip_vit_large_patch14", _clip(14, 224, 1024, 24, 16, 4096, 768)),
    "clip_vit_large_patch14_336": ("clip_vit_large_patch14_336", _clip(14, 336, 1024, 24, 16, 4096, 768)),
    "clip_vit_b_32_laion2b": ("clip_vit_b_32_laion2b_s34b_b79k", _clip(32, 224, 768, 12, 12, 3072, 512)),
    "clip_vit_h_14_laion2b": ("clip_vit_h_14_laion2b_s32b_b79k", _clip(14, 224, 1280, 32, 16, 5120, 1024)),
    "clip_vit_g_14_laion2b": ("clip_vit_g_14_laion2b_s12b_b42k", _clip(14, 224, 1408, 40, 16, 6144, 1024)),
    "clip_vit_bigg_14_laion2b": ("clip_vit_bigg_14_laion2b_39b_b160k", _clip(14, 224, 1664, 48, 16, 8192, 1280)),
}


# ---- where a preset's files are --------------------------------------------------------------

def _kaggle_model(preset: str, family: str) -> str:
    return "medsiglip" if preset.startswith("medsiglip") else family


def cache_folder() -> Path:
    """kagglehub's cache (where keras-hub's downloads of presets go): $KAGGLEHUB_CACHE or
    ~/.cache/kagglehub, as kagglehub decides it."""
    return Path(os.environ.get("KAGGLEHUB_CACHE") or Path.home() / ".cache" / "kagglehub")


def cached_preset_dir(preset: str, family: str) -> Path | None:
    """A folder of kagglehub's cache holding built-in preset ``preset`` (config and weights), the
    newest version there; found without importing keras-hub (`featcache backbones` stays quick)."""
    root = cache_folder() / "models" / "keras" / _kaggle_model(preset, family) / "keras" / preset
    versions = sorted((p for p in root.glob("*") if p.name.isdigit()), key=lambda p: int(p.name), reverse=True)
    for folder in versions:
        if (folder / PRESET_CONFIG).is_file() and (folder / PRESET_WEIGHTS).is_file():
            return folder
    return None


def is_preset_dir(path: Path) -> bool:
    """A keras-hub preset folder (save_to_preset) or a Hugging Face checkpoint folder."""
    return (path / PRESET_CONFIG).is_file() and ((path / PRESET_WEIGHTS).is_file() or (path / HF_WEIGHTS).is_file()
                                                  or any(path.glob("*.safetensors")))


def weight_files(folder: Path) -> list[Path]:
    files = [folder / PRESET_CONFIG, *sorted(folder.glob("*.weights.h5")), *sorted(folder.glob("*.safetensors"))]
    return [f for f in files if f.is_file()]


def folder_digest(folder: Path) -> str:
    """One digest over the config and weight files (name and content): a changed preset is a new
    configuration."""
    h = hashlib.sha256()
    for f in weight_files(folder):
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return f"sha256:{h.hexdigest()[:16]}"


def _missing(name: str, preset: str, reason: str) -> ParameterError:
    return ParameterError(
        "weights", f"{name}: the weights of keras-hub preset {preset!r} are not on this machine and cannot be "
        f"downloaded ({reason}); keras-hub caches them in {cache_folder()}",
        remedy="download them once on a machine with internet access (the same cache folder), or give a local "
               "preset folder (what keras-hub's save_to_preset writes) or a Hugging Face checkpoint folder as "
               "the weights", mentions=("weights",))


def _reason(exc: Exception) -> str:
    """The last words of a download failure (requests nests its causes in one long line)."""
    text = " ".join(str(exc).split())
    if "NameResolution" in text or "Failed to resolve" in text or "ConnectionError" in type(exc).__name__:
        return "no network connection"
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def fetch_preset(name: str, preset: str) -> Path:
    """The local folder of ``preset``: itself when a folder, else kagglehub's cache, downloading
    it there (keras-hub's own download) when it is not. Offline and uncached: one error naming
    the preset, the cache folder and the remedy."""
    if Path(preset).expanduser().is_dir():
        return Path(preset).expanduser()
    if not hub_available():
        raise ParameterError("weights", f"{name}: keras-hub is not installed", remedy=INSTALL)
    from keras_hub.src.utils.preset_utils import get_file

    try:
        get_file(preset, PRESET_CONFIG)
        return Path(get_file(preset, PRESET_WEIGHTS)).parent
    except Exception as exc:  # kagglehub raises its own types, requests' and OSError offline
        raise _missing(name, preset, _reason(exc)) from exc


def converter_preprocess(folder: Path, family: str, name: str) -> tuple[Preprocess, dict]:
    """The preset's image converter as numbers (scale, offset per channel) and its resize policy;
    a folder without one (a Hugging Face checkpoint) gets the family's numbers."""
    path = folder / CONVERTER_FILE
    if not path.is_file():
        return FAMILY_PREPROCESS[family], {}
    cfg = json.loads(path.read_text()).get("config", {})

    def three(v, default):
        v = default if v is None else v
        return tuple(float(x) for x in (v if isinstance(v, list | tuple) else [v] * 3))

    scale, offset = three(cfg.get("scale"), 1.0), three(cfg.get("offset"), 0.0)
    resize = {"interpolation": cfg.get("interpolation", "bilinear"), "antialias": bool(cfg.get("antialias")),
              "crop_to_aspect_ratio": bool(cfg.get("crop_to_aspect_ratio", True))}
    return Preprocess(name, scale, offset), resize


# ---- the network ------------------------------------------------------------------------------

def _load_backbone(name: str, arch: Arch, folder: Path | None, image_size: int, load_weights: bool):
    import keras_hub

    kwargs = {"image_shape": (image_size, image_size, 3)} if arch.family in RESIZABLE else {}
    try:
        backbone = keras_hub.models.Backbone.from_preset(str(folder), load_weights=load_weights, **kwargs)
    except Exception as exc:
        raise FeatcacheError(f"{name}: keras-hub cannot load the preset in {folder} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from exc
    if type(backbone).__name__ != _CLASSES[arch.family]:
        raise FeatcacheError(f"{name}: {folder} holds a {type(backbone).__name__}, not a {_CLASSES[arch.family]}")
    return backbone


def _rewire(name: str, arch: Arch, backbone, image_size: int, projection=None):
    """One functional model: images -> (final tokens[, the model's own embedding]), every
    transformer layer a layer of it (keras-hub's layers and weights, called in keras-hub's order)."""
    import keras

    images = keras.Input((image_size, image_size, 3), name="images")
    family = arch.family
    if family == "dinov2":
        x = backbone.embeddings(images)
        for layer in backbone.encoder.layers:
            x = layer(x)
        return keras.Model(images, backbone.layernorm(x), name=name)
    if family == "dinov3":
        x = backbone.embeddings(images)
        rope = backbone.rope_embedding(images)
        for layer in backbone.encoder.layers:
            x = layer(x, position_embeddings=rope, num_prefix_tokens=arch.prefix_tokens)
        return keras.Model(images, backbone.layernorm(x), name=name)
    tower = getattr(backbone, "vision_encoder", backbone)  # a loaded image-text model, or a bare tower
    if family == "siglip":
        x = tower.embedding(images)
        for block in tower.encoder_layers:
            x = block(x)
        tokens = tower.post_layer_norm(x)
        return keras.Model(images, [tokens, tower.head(tokens)], name=name)
    x = tower.pre_layer_norm(tower.embedding(images))
    for block in tower.encoder_layers:
        x = block(x)
    tokens = tower.layer_norm(x)
    if projection is None:
        projection = backbone.vision_projection
    # CLIP's pooler is the first (CLS) token, taken with Keras' own layers
    cls = keras.layers.Flatten(name="cls_token")(keras.layers.Cropping1D((0, tokens.shape[1] - 1), name="cls")(tokens))
    return keras.Model(images, [tokens, projection(cls)], name=name)


def _random_network(name: str, arch: Arch, image_size: int, preset_folder: Path | None):
    """The preset's architecture with random weights: from its configuration when it is on this
    machine (a local preset), else from the declared shape."""
    if preset_folder is not None:
        return _rewire(name, arch, _load_backbone(name, arch, preset_folder, image_size, load_weights=False),
                       image_size)
    tower = arch.random_tower(image_size)
    if arch.family == "clip":
        import keras

        tower, proj = tower
        projection = keras.layers.Dense(proj, use_bias=False, name="vision_projection")
        return _rewire(name, arch, tower, image_size, projection=projection)
    return _rewire(name, arch, tower, image_size)


def _block_pattern(family: str) -> str:
    """The blocks taps and fine-tuning name: keras-hub's layer names, their common prefix cut."""
    return {"dinov2": r"(?:.*_)?(embeddings|layers_\d+|layernorm)$",
            "dinov3": r"(?:.*_)?(embeddings|layers_\d+|layernorm)$",
            "siglip": r".*?(embedding|encoder_block_\d+|post_layer_norm|head)$",
            "clip": r".*?(embedding|pre_layer_norm|encoder_block_\d+|layer_norm|vision_projection)$"}[family]


def hub_backbone(name: str, preset: str, arch: Arch, *, reference: str = "") -> BackboneSpec:
    """A BackboneSpec for keras-hub preset ``preset`` (a built-in name, a kaggle:// or hf://
    handle, or a local preset folder) whose image tower has the shape ``arch``. Register it with
    ``register_backbone`` (or publish it in the ``featcache.backbones`` entry-point group)."""
    family = arch.family
    local_preset = Path(preset).expanduser() if Path(preset).expanduser().is_dir() else None

    def folder_for(weights: str) -> Path:
        return Path(weights) if weights not in ("imagenet", "random") else fetch_preset(name, preset)

    def build(image_size: int, weights: str):
        if not hub_available():
            raise ParameterError("weights", f"{name}: keras-hub is not installed", remedy=INSTALL)
        if weights == "random":
            return _random_network(name, arch, image_size, local_preset)
        folder = folder_for(weights)
        return _rewire(name, arch, _load_backbone(name, arch, folder, image_size, load_weights=True), image_size)

    def record(weights: str, image_size: int) -> WeightsRecord:
        details = {"source": "keras-hub", "preset": preset, "keras_hub_version": hub_version(),
                   "patch_size": arch.patch_size}
        if weights == "random":
            pre, resize = (converter_preprocess(local_preset, family, name) if local_preset
                           else (FAMILY_PREPROCESS[family], {}))
            return WeightsRecord("random", "random", pre, {**details, **resize})
        if weights != "imagenet":
            folder = Path(weights).expanduser()
            if not is_preset_dir(folder):
                raise ParameterError("weights", f"{name}: {folder} is not a keras-hub preset folder (config.json and "
                                                f"{PRESET_WEIGHTS}) nor a Hugging Face checkpoint folder "
                                                f"(config.json and {HF_WEIGHTS})")
            _check_same_shape(name, arch, folder)
            weights, details["preset"] = str(folder.resolve()), str(folder.resolve())
        else:
            folder = fetch_preset(name, preset)
        pre, resize = converter_preprocess(folder, family, name)
        files = {f.name: _file_sha(f) for f in weight_files(folder)}
        return WeightsRecord(weights, folder_digest(folder), pre, {**details, **resize, "weight_files": files})

    def available() -> bool:
        return local_preset is not None or cached_preset_dir(preset, family) is not None

    resizable = family in RESIZABLE
    own = FAMILY_POOLINGS[family]
    return BackboneSpec(
        name=name,
        input_size=224 if resizable else arch.image_size,
        feature_dim=arch.hidden_dim,
        preprocess=FAMILY_PREPROCESS[family],
        build_features=build,
        weights_source=f"keras-hub preset {preset} (kagglehub cache {cache_folder()})",
        weights_available=available,
        weights_identity=lambda size: f"keras-hub:{preset}",
        min_input_size=arch.patch_size if resizable else arch.image_size,
        max_input_size=None if resizable else arch.image_size,
        reference=reference,
        block_pattern=_block_pattern(family),
        parameters=arch.count_parameters(),
        poolings=own,
        patch_size=arch.patch_size,
        prefix_tokens=arch.prefix_tokens,
        embedding_dim=arch.embedding_dim,
        family=family,
        record_weights=record,
    )


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return f"sha256:{h.hexdigest()[:16]}"


def _check_same_shape(name: str, arch: Arch, folder: Path) -> None:
    """A folder given as the weights of a registered preset must hold that preset's network:
    feature sizes and blocks were declared from its shape."""
    cfg = json.loads((folder / PRESET_CONFIG).read_text())
    if "class_name" in cfg:
        try:
            got = arch_of_preset(folder)
        except (FeatcacheError, KeyError, TypeError, IndexError):
            got = None
        shape = None if got is None else (got.family, got.patch_size, got.hidden_dim, got.num_layers)
    else:  # a Hugging Face config.json
        shape = (arch.family, cfg.get("patch_size"), cfg.get("hidden_size"), cfg.get("num_hidden_layers"))
    want = (arch.family, arch.patch_size, arch.hidden_dim, arch.num_layers)
    if shape != want:
        raise ParameterError("weights", f"{name}: {folder} holds a network of another shape (family, patch, width, "
                                        f"layers: {shape}, {name} is {want})",
                             remedy="register that preset under a name of its own (featcache.backbones.keras_hub."
                                    "hub_backbone with arch_of_preset), or give the weights of this backbone")


def arch_of_preset(folder: str | Path) -> Arch:
    """The tower shape of a local keras-hub preset folder, read from its config.json: how a user
    (or a test) registers a preset of their own, ``hub_backbone(name, folder, arch_of_preset(folder))``."""
    cfg = json.loads((Path(folder) / PRESET_CONFIG).read_text())
    cls, c = cfg.get("class_name", ""), cfg.get("config", {})
    if cls in ("DINOV2Backbone", "DINOV3Backbone"):
        family = "dinov2" if cls == "DINOV2Backbone" else "dinov3"
        size = (c.get("position_embedding_shape") or c.get("image_shape"))[0] if family == "dinov2" \
            else c["image_shape"][0]
        return Arch(family, c["patch_size"], c["hidden_dim"], c["num_layers"], c["num_heads"], c["intermediate_dim"],
                    size, c.get("num_register_tokens", 0),
                    swiglu=bool(c.get("use_swiglu_ffn") or c.get("use_gated_mlp")))
    if cls in ("SigLIPBackbone", "CLIPBackbone"):
        v = c["vision_encoder"]["config"]
        family = "siglip" if cls == "SigLIPBackbone" else "clip"
        embedding = v["hidden_dim"] if family == "siglip" else c["projection_dim"]
        return Arch(family, v["patch_size"], v["hidden_dim"], v["num_layers"], v["num_heads"], v["intermediate_dim"],
                    v["image_shape"][0], embedding_dim=embedding)
    raise FeatcacheError(f"{folder}: a {cls or 'model'} preset; featcache takes DINOv2, DINOv3, SigLIP and CLIP "
                         "presets")


SPECS = [hub_backbone(name, preset, arch, reference="featcache.backbones.keras_hub:SPECS")
         for name, (preset, arch) in PRESETS.items()]
