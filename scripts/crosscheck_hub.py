"""Reference cross-check of featcache's keras-hub DINOv2 / DINOv3 backbones against Hugging Face
``transformers`` (an independent implementation), on random weights and real photos.

For each family (DINOv2, DINOv2 with registers, DINOv3 where transformers has it) this builds a
randomly initialised ``transformers`` model of the registered preset's shape (``dinov2_small``,
``dinov2_small_reg``, ``dinov3_small``; every weight re-drawn so no bias or layer scale is a
trivial 0 or 1), saves it with ``save_pretrained`` into a temporary folder, and gets features
three ways from the same preprocessed photos:

  reference   transformers' own forward pass (PyTorch), poolings done here in NumPy: the CLS
              token, the mean of the patch tokens (registers excluded), both concatenated, the
              max over patch tokens, and the outputs of the last four transformer blocks (taken
              with forward hooks, before the final norm) pooled as CLS + patch mean.
  keras-hub   ``keras_hub.models.Backbone.from_preset(folder)``: keras-hub's own Hugging Face
              converter, its backbone called directly (final normed tokens).
  featcache   the user's path: ``resolve_config(name, size, pooling, weights=folder)`` and
              ``build_feature_extractor`` (the library equivalent of ``--weights DIR``), one
              model per pooling, the four taps in one pass.

It reports, per family, size and pooling, the largest absolute difference divided by the largest
absolute reference value (``max_rel``), and passes at 1e-4. At a size other than the checkpoint's
(224 for DINOv2, whose position embeddings are stored for 518 px) the check covers the position
embedding interpolation too. It also checks featcache's preprocessing numbers against the
constants transformers' image processors use (ImageNet mean/std for DINO, OpenAI's for CLIP, 0.5
for SigLIP). CLIP and SigLIP have no Hugging Face converter in keras-hub 0.32; their poolings,
preprocessing and zero-shot logits are checked against keras-hub's own calls in
tests/test_keras_hub.py and tests/test_zeroshot.py.

Not a test and not part of the package: it needs torch and transformers (~6 GB), which featcache
does not depend on. It installs nothing itself. To run it, in a separate environment:

    python -m venv /tmp/xcheck
    /tmp/xcheck/bin/pip install -e '.[hub]' torch transformers
    /tmp/xcheck/bin/python scripts/crosscheck_hub.py        # ~6-9 minutes on 2 shared cores

and it writes benchmarks/results/hub_crosscheck.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "hub_crosscheck.json"
TOLERANCE = 1e-4
POOLINGS = ("cls", "avg", "cls_avg", "max")


def need(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"error: {', '.join(missing)} not importable; see this script's docstring for the environment")


# -- the reference models ----------------------------------------------------------------------

def randomise(model, seed: int) -> None:
    """Every weight re-drawn: norms' and layer scales near 1, kernels at 1/sqrt(fan-in), biases and
    tokens small noise (nothing left at a trivial 0 or 1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if ("norm" in name and name.endswith("weight")) or "lambda1" in name:
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("weight") and p.ndim >= 2:  # Linear and Conv kernels
                p.copy_(noise / p[0].numel() ** 0.5)
            else:  # biases, CLS / register / mask tokens, position embeddings
                p.copy_(0.1 * noise)


def hf_models():
    """(featcache name, transformers model, its blocks, final norm, prefix tokens), the shapes of the
    registered presets."""
    import transformers as t

    out = []
    dino = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                image_size=518, layerscale_value=1.0)
    m = t.Dinov2Model(t.Dinov2Config(**dino)).eval()
    out.append(("dinov2_small", m, list(m.encoder.layer), m.layernorm, 1))
    if hasattr(t, "Dinov2WithRegistersModel"):
        m = t.Dinov2WithRegistersModel(t.Dinov2WithRegistersConfig(**dino, num_register_tokens=4)).eval()
        out.append(("dinov2_small_reg", m, list(m.encoder.layer), m.layernorm, 5))
    if hasattr(t, "DINOv3ViTModel"):
        m = t.DINOv3ViTModel(t.DINOv3ViTConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=12,
                                               num_attention_heads=6, patch_size=16, image_size=224,
                                               num_register_tokens=4)).eval()
        out.append(("dinov3_small", m, list(m.model.layer), m.norm, 5))
    return out


def reference(model, blocks, x_nhwc: np.ndarray):
    """transformers' final normed tokens and every block's output (forward hooks), stacked."""
    import torch

    seen: dict[int, np.ndarray] = {}
    hooks = [blocks[i].register_forward_hook(
        lambda _m, _in, out, i=i: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out).detach().numpy()))
        for i in range(len(blocks))]
    try:
        with torch.no_grad():
            pixels = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
            tokens = model(pixel_values=pixels).last_hidden_state.numpy()
    finally:
        for h in hooks:
            h.remove()
    return tokens, np.stack([seen[i] for i in range(len(blocks))])


def reference_child(tmp: Path) -> None:
    """The PyTorch side, in a process of its own (PyTorch and TensorFlow in one process crash):
    build, randomise and save each model, then its outputs on every ``x_<size>.npy`` of the
    family's folder; plus the preprocessing constants and the versions, as json on stdout."""
    import torch
    import transformers

    torch.manual_seed(0)
    wanted = set(json.loads((tmp / "wanted.json").read_text()))
    done = []
    for seed, (name, model, blocks, _norm, prefix) in enumerate(hf_models()):
        if wanted and name not in wanted:
            continue
        randomise(model, seed)
        folder = tmp / name
        model.save_pretrained(folder)
        for xf in sorted((tmp / "inputs").glob(f"{name}__x_*.npy")):
            x = np.load(xf)
            tokens, block_outputs = reference(model, blocks, x)
            extra = {}
            if hasattr(model.embeddings, "interpolate_pos_encoding"):  # DINOv2: its position embeddings at x's size
                size, patch = x.shape[1], model.config.patch_size
                with torch.no_grad():
                    extra["pos"] = model.embeddings.interpolate_pos_encoding(
                        torch.zeros(1, (size // patch) ** 2 + 1, model.config.hidden_size), size, size).numpy()
            np.savez(tmp / "inputs" / xf.name.replace("__x_", "__ref_").replace(".npy", ".npz"),
                     tokens=tokens, blocks=block_outputs, **extra)
        done.append({"name": name, "prefix_tokens": prefix, "checkpoint_size": model.config.image_size})
    clip = None
    if "clip_vit_base_patch32" in wanted or not wanted:
        clip = clip_reference_child(tmp)
    print(json.dumps({"models": done, "clip": clip, "preprocessing": preprocessing_numbers(),
                      "transformers_version": transformers.__version__, "torch_version": torch.__version__}))


def pool(tokens: np.ndarray, pooling: str, prefix: int) -> np.ndarray:
    cls, patches = tokens[:, 0], tokens[:, prefix:]
    return {"cls": cls, "avg": patches.mean(1), "max": patches.max(1),
            "cls_avg": np.concatenate([cls, patches.mean(1)], axis=1)}[pooling]


def compare(got: np.ndarray, ref: np.ndarray) -> dict:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    diff = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max())
    rel = diff / scale
    return {"max_abs": diff, "ref_max_abs": scale, "max_rel": rel, "shape": list(ref.shape),
            "pass": bool(rel <= TOLERANCE)}


# -- CLIP: no keras-hub converter, so the image tower's weights are mapped here ---------------------

CLIP_NAME = "clip_vit_base_patch32"  # the registered shape (ViT-B/32: 50 tokens, quick on a CPU)


def clip_reference_child(tmp: Path) -> dict:
    """A random transformers CLIP image tower of ``clip_vit_base_patch32``'s shape: its weights as
    keras-hub names them (x_clip.npy in, clip_weights.npz and clip_ref.npz out)."""
    import torch
    import transformers as t

    xf = tmp / "inputs" / "clip__x_224.npy"
    if not xf.is_file():
        return {}
    model = t.CLIPVisionModelWithProjection(t.CLIPVisionConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224,
        patch_size=32, projection_dim=512, hidden_act="quick_gelu")).eval()
    randomise(model, 7)
    v, heads = model.vision_model, 12
    sd = {k: p.detach().numpy() for k, p in model.state_dict().items()}
    d = 768
    w = {"embedding/class_embedding": sd["vision_model.embeddings.class_embedding"],
         "embedding/patch_embedding/kernel": sd["vision_model.embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0),
         "embedding/position_embedding/embeddings": sd["vision_model.embeddings.position_embedding.weight"],
         "pre_layer_norm/gamma": sd["vision_model.pre_layrnorm.weight"],
         "pre_layer_norm/beta": sd["vision_model.pre_layrnorm.bias"],
         "layer_norm/gamma": sd["vision_model.post_layernorm.weight"],
         "layer_norm/beta": sd["vision_model.post_layernorm.bias"],
         "vision_projection/kernel": sd["visual_projection.weight"].T,
         # keras-hub initialises these to zeros (every token would get position 0) and relies on a
         # preset's weight file for 0..N; transformers uses 0..N
         "embedding/position_ids": np.arange(50, dtype=np.int64)[None]}
    for i in range(12):
        hf, kh = f"vision_model.encoder.layers.{i}.", f"encoder_block_{i}/"
        for a, b in (("layer_norm_1", "layer_norm1"), ("layer_norm_2", "layer_norm2")):
            w[kh + a + "/gamma"], w[kh + a + "/beta"] = sd[hf + b + ".weight"], sd[hf + b + ".bias"]
        for a, b in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            w[f"{kh}attention/{a}/kernel"] = sd[f"{hf}self_attn.{b}.weight"].T.reshape(d, heads, d // heads)
            w[f"{kh}attention/{a}/bias"] = sd[f"{hf}self_attn.{b}.bias"].reshape(heads, d // heads)
        w[f"{kh}attention/attention_output/kernel"] = sd[f"{hf}self_attn.out_proj.weight"].T.reshape(heads, d // heads, d)
        w[f"{kh}attention/attention_output/bias"] = sd[f"{hf}self_attn.out_proj.bias"]
        for a, b in (("dense_1", "fc1"), ("dense_2", "fc2")):
            w[f"{kh}{a}/kernel"], w[f"{kh}{a}/bias"] = sd[f"{hf}mlp.{b}.weight"].T, sd[f"{hf}mlp.{b}.bias"]
    np.savez(tmp / "clip_weights.npz", **{k.replace("/", "|"): a for k, a in w.items()})
    with torch.no_grad():
        out = model(pixel_values=torch.from_numpy(np.ascontiguousarray(np.load(xf).transpose(0, 3, 1, 2))))
        tokens = v.post_layernorm(out.last_hidden_state).numpy()  # featcache pools the normed tokens
    np.savez(tmp / "clip_ref.npz", tokens=tokens, embedding=out.image_embeds.numpy())
    return {"transformers_class": type(model).__name__, "parameters": int(sum(p.numel() for p in model.parameters()))}


def clip_preset(tmp: Path) -> Path:
    """keras-hub's CLIPBackbone with the mapped image-tower weights (a tiny random text tower), saved
    as a local preset with CLIP's image converter."""
    import keras_hub

    w = {k.replace("|", "/"): a for k, a in np.load(tmp / "clip_weights.npz").items()}
    vision = keras_hub.models.CLIPVisionEncoder(patch_size=32, hidden_dim=768, num_layers=12, num_heads=12,
                                                intermediate_dim=3072, image_shape=(224, 224, 3))
    text = keras_hub.models.CLIPTextEncoder(vocabulary_size=50, embedding_dim=32, hidden_dim=32, num_layers=1,
                                            num_heads=2, intermediate_dim=64, max_sequence_length=8)
    backbone = keras_hub.models.CLIPBackbone(vision, text, projection_dim=512)
    targets = list(vision.weights) + list(backbone.vision_projection.weights)
    used = set()
    for var in targets:
        key = next((k for k in w if var.path == k or var.path.endswith("/" + k)), None)
        if key is None:
            raise SystemExit(f"error: no transformers weight for keras-hub's {var.path}")
        var.assign(w[key])
        used.add(key)
    if used != set(w):
        raise SystemExit(f"error: transformers weights left unmapped: {sorted(set(w) - used)}")
    folder = tmp / "clip_preset"
    backbone.save_to_preset(str(folder))
    mean, std = np.array((0.48145466, 0.4578275, 0.40821073)), np.array((0.26862954, 0.26130258, 0.27577711))
    keras_hub.layers.CLIPImageConverter(image_size=(224, 224), scale=list(1 / (255 * std)),
                                        offset=list(-mean / std)).save_to_preset(str(folder))
    return folder


# -- featcache's side --------------------------------------------------------------------------

def featcache_features(name: str, folder: Path, size: int, pooling: str, x: np.ndarray,
                       taps: tuple[str, ...] = ()) -> np.ndarray:
    from featcache.backbones.model import build_feature_extractor, resolve_config, tap_configs

    config = resolve_config(name, size, pooling, weights=str(folder))
    if taps:
        first, *rest = tap_configs(config, taps)
        model = build_feature_extractor(first, together=tuple(rest))
    else:
        model = build_feature_extractor(config)
    return np.asarray(model.predict_on_batch(x))


def preprocessing_numbers() -> list[dict]:
    """featcache's per-channel scale and offset (0-255 in) against transformers' constants."""
    from transformers.image_utils import (
        IMAGENET_DEFAULT_MEAN,
        IMAGENET_DEFAULT_STD,
        OPENAI_CLIP_MEAN,
        OPENAI_CLIP_STD,
    )

    from featcache.backbones.keras_hub import FAMILY_PREPROCESS

    want = {"dinov2": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
            "dinov3": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
            "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), "siglip": ((0.5,) * 3, (0.5,) * 3)}
    rows = []
    for family, (mean, std) in want.items():
        pre = FAMILY_PREPROCESS[family]
        scale = [1 / (255 * s) for s in std]
        offset = [-m / s for m, s in zip(mean, std, strict=True)]
        diff = max(max(abs(a - b) for a, b in zip(pre.scale, scale, strict=True)),
                   max(abs(a - b) for a, b in zip(pre.offset, offset, strict=True)))
        rows.append({"family": family, "featcache_scale": list(pre.scale), "featcache_offset": list(pre.offset),
                     "transformers_mean": list(mean), "transformers_std": list(std), "max_abs_diff": diff,
                     "pass": diff <= 1e-7})
    return rows


def fitting(name: str, sizes: list[int]) -> list[int]:
    from featcache.backbones.keras_hub import PRESETS

    return [s for s in sizes if s % PRESETS[name][1].patch_size == 0]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8, help="photos from the ImageNet samples (real JPEGs)")
    p.add_argument("--sizes", default="224,448,518",
                   help="input sizes; each family takes those that are multiples of its patch size")
    p.add_argument("--families", default="", help="featcache names to check (default: all transformers has)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--reference-child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    need("torch", "transformers", "keras_hub", "featcache")
    if args.reference_child:
        return reference_child(args.reference_child)

    from featcache.backbones.keras_hub import FAMILY_PREPROCESS, PRESETS  # no TensorFlow yet
    from featcache.ingest.decode import read_image
    from featcache.ingest.sample_data import fetch

    photos = sorted(fetch("imagenet-samples").rglob("*.jpg"))[:args.images]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    families = [f for f in args.families.split(",") if f] or ["dinov2_small", "dinov2_small_reg", "dinov3_small",
                                                               CLIP_NAME]
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="featcache-xcheck-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "inputs").mkdir()
        (tmp / "wanted.json").write_text(json.dumps(families))
        for name in [f for f in families if f != CLIP_NAME]:  # featcache's decode and numbers, one x for both
            pre = FAMILY_PREPROCESS[PRESETS[name][1].family]
            for size in fitting(name, sizes):
                x = pre(np.stack([read_image(f, size) for f in photos])).astype(np.float32)
                np.save(tmp / "inputs" / f"{name}__x_{size}.npy", x)
        if CLIP_NAME in families:
            x = FAMILY_PREPROCESS["clip"](np.stack([read_image(f, 224) for f in photos])).astype(np.float32)
            np.save(tmp / "inputs" / "clip__x_224.npy", x)
        proc = subprocess.run([sys.executable, __file__, "--reference-child", str(tmp)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            sys.exit(f"error: the transformers side failed:\n{proc.stderr[-3000:]}")
        child = json.loads(proc.stdout.strip().splitlines()[-1])

        import keras_hub

        from featcache import __version__
        from featcache.backbones.keras_hub import hub_version
        from featcache.backbones.model import block_shapes, resolve_config

        for info in child["models"]:
            name, prefix = info["name"], info["prefix_tokens"]
            folder = tmp / name
            for size in fitting(name, sizes):
                x = np.load(tmp / "inputs" / f"{name}__x_{size}.npy")
                ref = np.load(tmp / "inputs" / f"{name}__ref_{size}.npz")
                ref_tokens, ref_blocks = ref["tokens"], ref["blocks"]
                config = resolve_config(name, size, "cls_avg", weights=str(folder))
                assert config.preprocess == FAMILY_PREPROCESS[PRESETS[name][1].family], config.preprocess
                layer_blocks = [b for b in block_shapes(config) if b.startswith("layers_")]
                assert len(layer_blocks) == len(ref_blocks), (layer_blocks, ref_blocks.shape)
                taps = tuple(layer_blocks[-4:])  # DINOv2's linear probe: the last four blocks
                kh = keras_hub.models.Backbone.from_preset(str(folder), image_shape=(size, size, 3))  # its converter
                kh_tokens = np.asarray(kh.predict_on_batch(x))
                row = {"family": name, "input_size": size, "checkpoint_size": info["checkpoint_size"],
                       "prefix_tokens": prefix, "images": len(photos),
                       "keras_hub_tokens_vs_transformers": compare(kh_tokens, ref_tokens), "poolings": {}}
                if "pos" in ref.files:  # where a difference at another size than the checkpoint's comes from
                    row["position_embeddings_vs_transformers"] = compare(
                        np.asarray(kh.embeddings.interpolated_position_embeddings), ref["pos"])
                for pooling in POOLINGS:
                    got = featcache_features(name, folder, size, pooling, x)
                    row["poolings"][pooling] = compare(got, pool(ref_tokens, pooling, prefix))
                got = featcache_features(name, folder, size, "cls_avg", x, taps)
                want = np.concatenate([pool(ref_blocks[int(t.split("_")[1])], "cls_avg", prefix) for t in taps],
                                      axis=1)
                row["poolings"][f"taps {','.join(taps)} cls_avg"] = compare(got, want)
                results.append(row)
                print(f"{name} @ {size}: keras-hub tokens {row['keras_hub_tokens_vs_transformers']['max_rel']:.1e}; "
                      + ", ".join(f"{k} {v['max_rel']:.1e}" for k, v in row["poolings"].items()), flush=True)
        if child.get("clip"):
            folder = clip_preset(tmp)
            x = np.load(tmp / "inputs" / "clip__x_224.npy")
            ref = np.load(tmp / "clip_ref.npz")
            config = resolve_config(CLIP_NAME, 224, "embedding", weights=str(folder))
            fam = FAMILY_PREPROCESS["clip"]
            assert np.allclose(config.preprocess.scale, fam.scale) and np.allclose(config.preprocess.offset, fam.offset)
            row = {"family": CLIP_NAME, "input_size": 224, "prefix_tokens": 1, "images": len(photos),
                   "weights": "transformers CLIPVisionModelWithProjection, random, mapped by this script "
                              "(keras-hub has no CLIP converter)", **child["clip"], "poolings": {}}
            for pooling in ("embedding", "cls", "avg", "max"):
                got = featcache_features(CLIP_NAME, folder, 224, pooling, x)
                want = ref["embedding"] if pooling == "embedding" else pool(ref["tokens"], pooling, 1)
                row["poolings"][pooling] = compare(got, want)
            results.append(row)
            print(f"{CLIP_NAME} @ 224: " + ", ".join(f"{k} {v['max_rel']:.1e}" for k, v in row["poolings"].items()),
                  flush=True)
    pre = child["preprocessing"]
    checks = [r["keras_hub_tokens_vs_transformers"]["pass"] for r in results
                                                                     if "keras_hub_tokens_vs_transformers" in r] + \
        [v["pass"] for r in results for v in r["poolings"].values()] + [r["pass"] for r in pre]
    report = {"check": "hub_crosscheck", "tolerance_max_rel": TOLERANCE, "all_pass": all(checks),
              "metric": "max |featcache - transformers| / max |transformers| over every feature of every image",
              "featcache_version": __version__, "keras_hub_version": hub_version(),
              "transformers_version": child["transformers_version"], "torch_version": child["torch_version"],
              "weights": "random (every parameter re-drawn), saved with save_pretrained",
              "photos": [p.name for p in photos], "seconds": time.perf_counter() - t0,
              "results": results, "preprocessing": pre,
              "not_covered": "CLIP, SigLIP: keras-hub 0.32 has no Hugging Face converter for them; featcache's poolings, "
                             "preprocessing and zero-shot logits are checked against keras-hub's own calls in "
                             "tests/test_keras_hub.py and tests/test_zeroshot.py"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"all within {TOLERANCE:g}: {report['all_pass']}; preprocessing numbers: "
          + ", ".join(f"{r['family']} {'ok' if r['pass'] else 'DIFFERS'}" for r in pre))
    print(f"written {args.out}")
    sys.exit(0 if report["all_pass"] else 1)


if __name__ == "__main__":
    main()
