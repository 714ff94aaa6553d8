"""`zeroshot`: a CLIP, SigLIP or SigLIP 2 model's own zero-shot classifier on its cached image
embeddings. Nothing is trained on the images.

"Fit" puts each class name (folder name, ``_`` and ``-`` read as spaces) into the templates (one,
or a prompts file of several), runs the prompts through the model's text tower once
(backbones/hub_text.py: keras-hub's tokenizer and text encoder for the preset the features came
from), L2-normalises each prompt's embedding, averages a class's prompts and normalises again
(CLIP's prompt ensembling), and keeps the result as learned state with the model's logit scale.

Scores: logit_c = logit_scale * cos(image, text_c) (+ logit_bias for SigLIP). Probabilities are
the softmax over the classes. For CLIP that is the model's own zero-shot probability. SigLIP
was trained with a sigmoid per class, sigmoid(logit_c); featcache reports the softmax of the same
logits (the bias is shared, so it cancels), which ranks the classes the same way and is a
distribution like every other head's; the sigmoid scores are ``sigmoid_scores``.

Exported as two Keras layers: UnitNormalization of the image embedding, then one softmax Dense
layer whose kernel is logit_scale * the text embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import ParameterError
from .base import FitContext, Head, fit_inputs, register_head
from .data import map_blocks
from .params import Param

STATE_FILE, META_FILE = "zeroshot.npz", "zeroshot.json"
DEFAULT_TEMPLATE = "a photo of a {}."


def class_text(name: str) -> str:
    """A class folder's name as words: ``golden_retriever`` -> ``golden retriever``."""
    return " ".join(name.replace("_", " ").replace("-", " ").split())


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@register_head
class ZeroShotHead(Head):
    name = "zeroshot"
    files: ClassVar[tuple[str, ...]] = (STATE_FILE, META_FILE)

    parameters = (
        Param("template", str, DEFAULT_TEMPLATE, "Zero-shot prompt, {} where the class name goes.", sweep=False),
        Param("prompts_file", str, None, "Zero-shot prompts: a text file of templates, one a line, each with {}; "
              "a class's prompts are averaged (replaces the template).", optional=True, sweep=False),
    )

    # -- the text side, once -----------------------------------------------------------------------
    def templates(self) -> list[str]:
        from ..backbones.hub_text import read_templates

        if self.prompts_file:
            return read_templates(self.prompts_file)
        if "{}" not in self.template:
            raise ParameterError("template", f"{self.template!r} has no {{}} for the class name",
                                 remedy="give a template such as: a photo of a {}.")
        return [self.template]

    def fit(self, X, y, *, validation=None, context: FitContext | None = None) -> ZeroShotHead:
        from ..backbones.hub_text import load_text_tower

        X, y, _, _, context = fit_inputs(X, y, validation, context)
        if len(context.features) != 1 or not context.classes:
            raise ParameterError("head", "zeroshot needs the features of one CLIP or SigLIP configuration and "
                                         "the class names (its fit reads them from the store)",
                                 remedy="train it on one backbone's features", mentions=("backbones",))
        config = context.features[0]
        tower = load_text_tower(config.key, config.backbone)
        templates = self.templates()
        names = [class_text(c) for c in context.classes]
        prompts = [t.format(n) for n in names for t in templates]
        emb = _unit(tower.embed(prompts)).reshape(len(names), len(templates), -1)
        text = _unit(emb.mean(axis=1))
        dim = int(X.shape[-1])
        if text.shape[1] != dim:
            raise ParameterError("head", f"{config.key}: the text embeddings have {text.shape[1]} values, the image "
                                         f"embeddings {dim}")
        self.text_, self.logit_scale_, self.logit_bias_ = text, tower.logit_scale, tower.logit_bias
        self.family_, self.prompts_, self.class_texts_ = tower.family, templates, names
        self._set_classes(len(names))
        return self

    def refitted(self, X, y, n_classes: int) -> ZeroShotHead:
        return self  # nothing was learned from the images: a refit on more of them is this head

    # -- scores -------------------------------------------------------------------------------------
    def logits(self, X) -> np.ndarray:
        return map_blocks(X, lambda xb: self.logit_scale_ * _unit(np.asarray(xb, np.float64)) @ self.text_.T
                          + self.logit_bias_, len(self.text_))

    def predict_proba(self, X) -> np.ndarray:
        return _softmax(self.logits(X)).astype(np.float32)

    def sigmoid_scores(self, X) -> np.ndarray:
        """SigLIP's own per-class probabilities, sigmoid(logit) (they need not sum to one)."""
        return (1.0 / (1.0 + np.exp(-self.logits(X)))).astype(np.float32)

    def summary(self) -> dict:
        if not hasattr(self, "text_"):
            return {}
        return {"family": self.family_, "logit_scale": self.logit_scale_, "logit_bias": self.logit_bias_,
                "prompts": self.prompts_, "trained_on_images": False}

    # -- persistence (no pickle) --------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / STATE_FILE, text=self.text_)
        (folder / META_FILE).write_text(json.dumps(
            {"family": self.family_, "logit_scale": self.logit_scale_, "logit_bias": self.logit_bias_,
             "prompts": self.prompts_, "class_texts": self.class_texts_, "n_classes": self.n_classes_}, indent=2))

    @classmethod
    def load(cls, folder: Path, params: dict) -> ZeroShotHead:
        folder = Path(folder)
        head = cls(**params)
        with np.load(folder / STATE_FILE, allow_pickle=False) as z:
            head.text_ = np.asarray(z["text"], np.float64)
        meta = json.loads((folder / META_FILE).read_text())
        head.family_, head.logit_scale_, head.logit_bias_ = meta["family"], meta["logit_scale"], meta["logit_bias"]
        head.prompts_, head.class_texts_ = meta["prompts"], meta["class_texts"]
        head._set_classes(meta["n_classes"])
        return head

    # -- Keras ----------------------------------------------------------------------------------------
    def to_keras(self):
        import keras

        inputs = keras.Input((self.text_.shape[1],), name="features")
        unit = keras.layers.UnitNormalization(name="unit_embedding")(inputs)
        dense = keras.layers.Dense(len(self.text_), activation="softmax", name="probabilities")
        model = keras.Model(inputs, dense(unit), name="zeroshot_head")
        dense.set_weights([(self.logit_scale_ * self.text_.T).astype(np.float32),
                           np.full(len(self.text_), self.logit_bias_, np.float32)])
        return model
