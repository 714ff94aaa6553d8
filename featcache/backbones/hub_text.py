"""The text tower of a CLIP or SigLIP configuration: prompts -> the model's own text embeddings,
and its logit scale (and SigLIP's bias), rebuilt from the configuration's record.

The zero-shot head reads this once, at fit time. The preset is found as extraction found it (a
local folder, or keras-hub's cache), and its weight files must have the digests the record holds:
a text tower of other weights than the image features came from would give wrong scores silently.
keras-hub owns the tokenizer (the preset's own), the packing and the towers; nothing is
reimplemented here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FeatcacheError, ParameterError
from .spec import BackboneConfig

TEXT_FAMILIES = ("clip", "siglip")  # the families with a text tower
EMBEDDING_POOLING = "embedding"
# keras-hub's preprocessor class of each family (tokenizer + start/end packing, lower-casing)
_PREPROCESSORS = {"clip": "CLIPPreprocessor", "siglip": "SigLIPPreprocessor"}
_TOKENIZERS = {"clip": "CLIPTokenizer", "siglip": "SigLIPTokenizer"}
BATCH = 64


@dataclass(frozen=True)
class TextTower:
    """What the zero-shot head needs of a model's text side."""

    family: str
    logit_scale: float  # the multiplier of the cosine (already exp() of the stored log scale)
    logit_bias: float  # SigLIP's; 0 for CLIP
    embed: object  # list[str] -> (n, E) float64 text embeddings (not normalised)


def check_text_config(key: str, backbone: BackboneConfig) -> str:
    """The family of a configuration the zero-shot head can score, or one ParameterError saying
    why not (a CNN, DINOv2, another pooling, random weights)."""
    details = backbone.details_dict
    family = _family(backbone)
    if details.get("source") != "keras-hub" or family not in TEXT_FAMILIES:
        raise ParameterError("head", f"zeroshot needs the image embedding of a model with a text tower (CLIP, "
                                     f"SigLIP, SigLIP 2); {key} is of {backbone.name}, which has none",
                             remedy="extract a CLIP or SigLIP backbone with the embedding pooling, or train "
                                    "another head", mentions=("pooling",))
    if backbone.tap or backbone.pooling != EMBEDDING_POOLING:
        raise ParameterError("head", f"zeroshot compares the model's own image embedding with its text embedding; "
                                     f"{key} holds the {backbone.pooling} pooling"
                                     f"{' of ' + backbone.tap if backbone.tap else ''}",
                             remedy=f"extract {backbone.name} with the {EMBEDDING_POOLING} pooling",
                             mentions=("pooling",))
    if backbone.weights == "random":
        raise ParameterError("head", f"{key} was extracted with random weights: its image tower matches no text "
                                     "tower", remedy="extract it with the preset's weights", mentions=("weights",))
    return family


def _family(backbone: BackboneConfig) -> str:
    from . import spec_for

    try:
        return spec_for(backbone).family
    except FeatcacheError:  # a backbone this process cannot rebuild: not one with a text tower here
        return ""


def load_text_tower(key: str, backbone: BackboneConfig) -> TextTower:
    """The preset's tokenizer, text encoder and logit scale, from the folder the record names (or
    keras-hub's cache), its weight files checked against the record's digests."""
    family = check_text_config(key, backbone)
    from .keras_hub import _file_sha, fetch_preset, weight_files

    details = backbone.details_dict
    folder = fetch_preset(backbone.name, details["preset"])
    recorded = details.get("weight_files") or {}
    found = {f.name: _file_sha(f) for f in weight_files(folder)}
    if recorded and found != recorded:
        raise FeatcacheError(f"{folder}: its weight files are not the ones {key} was extracted with (digests differ)",
                             remedy="give the preset folder the features came from, or extract again")
    import keras_hub

    try:
        model = keras_hub.models.Backbone.from_preset(str(folder))
        tokenizer = getattr(keras_hub.models, _TOKENIZERS[family]).from_preset(str(folder))
    except Exception as exc:  # a preset saved without its tokenizer, an unreadable vocabulary
        raise FeatcacheError(f"{folder}: keras-hub cannot load the text tower of {backbone.name} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})",
                             remedy="give a preset folder that holds the tokenizer (what the preset's "
                                    "save_to_preset writes with its tokenizer)") from exc
    length = int(model.text_encoder.max_sequence_length)
    preprocessor = getattr(keras_hub.models, _PREPROCESSORS[family])(tokenizer, sequence_length=length)
    if family == "clip":
        scale, bias = float(np.exp(np.asarray(model.clip_head.logit_scale))), 0.0
    else:
        head = model.siglip_head
        scale, bias = float(np.exp(np.asarray(head.logit_scale))), float(np.asarray(head.logit_bias))

    def embed(prompts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(prompts), BATCH):
            ids = preprocessor({"images": None, "prompts": list(prompts[i:i + BATCH])})["token_ids"]
            out.append(np.asarray(model.get_text_embeddings(ids), np.float64))
        return np.concatenate(out)

    return TextTower(family, scale, bias, embed)


def read_templates(path: str | Path) -> list[str]:
    """A prompts file: one template a line, each with ``{}`` where the class name goes; blank
    lines and lines starting with # skipped."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError("prompts_file", f"{path}: cannot be read ({type(exc).__name__})") from None
    templates = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ParameterError("prompts_file", f"{path}: " + (f"line {bad[0]!r} has no {{}} for the class name" if bad
                                                           else "holds no template"),
                             remedy="write one template a line, such as: a photo of a {}.")
    return templates
