"""Extraction from a bucket against the same images on local disk, in the same run.

A real S3-compatible server (moto's server mode, ``moto[server]``) on 127.0.0.1 holds the first
``--images`` ORL photos (real PGM faces, ~10 KB each: many small objects, the hard case for a
bucket) under ``s3://bench/orl/``; the same files lie in a local folder. Each round extracts both
into fresh stores with the same backbone, alternating which goes first, through the ordinary client
configuration (``AWS_ENDPOINT_URL``, a dummy key pair). Two numbers per source:

  wall images/s     images / the whole ``extract()`` call: listing or walking, reading every byte
                    for the content digests, decoding, the forward passes, writing the store
  extract images/s  what the store records for the extraction phase (rows computed / seconds)

and their ratio bucket / local (target: at least 0.8). The best round of each is reported.
A loopback server has no network latency but pays HTTP and moto's request handling per object.

    python benchmarks/bench_s3.py                         # efficientnet_lite0, 200 images
    python benchmarks/bench_s3.py --backbone tiny         # a 2-layer net: the reading alone dominates
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "s3.json"


def tiny_backbone() -> str:
    """A registered 2-convolution backbone (as the tests' tiny_test): the reader is the bottleneck."""
    from featcache.backbones import PREPROCESS, BackboneSpec, list_backbones, register_backbone

    def build(size, weights):
        import keras

        inputs = keras.Input((size, size, 3))
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
        return keras.Model(inputs, x)

    if "bench_tiny" not in {s.name for s in list_backbones()}:
        register_backbone(BackboneSpec(name="bench_tiny", input_size=64, feature_dim=16, preprocess=PREPROCESS["tf"],
                                       build_features=build, weights_source="random (benchmark only)",
                                       weights_available=lambda: True, weights_identity=lambda size: "bench-tiny-v1"))
    return "bench_tiny"


def start_server(in_process: bool):
    """moto's S3 server on 127.0.0.1: its own process by default (as a real server would be)."""
    if in_process:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        return (server, *server.get_host_and_port())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, "127.0.0.1", port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto's server did not start")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--backbone", default="efficientnet_lite0", help="a backbone name, or tiny")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None, help="reader threads (default: featcache's)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--in-process", action="store_true",
                    help="run the server on a thread of this process (it then competes for the GIL with the reader)")
    args = ap.parse_args(argv)

    server, host, port = start_server(args.in_process)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}", FEATCACHE_FSYNC="0")
    import boto3

    import featcache
    from featcache.ingest.sample_data import fetch

    weights = "imagenet"
    backbone = args.backbone
    if backbone == "tiny":
        backbone, weights = tiny_backbone(), "random"
    work = Path(tempfile.mkdtemp(prefix="featcache-bench-s3-"))
    try:
        orl = fetch("orl-faces")
        files = sorted(orl.glob("s*/*.pgm"), key=lambda p: (int(p.parent.name[1:]), p.name))[:args.images]
        local = work / "orl"
        client = boto3.client("s3")
        client.create_bucket(Bucket="bench")
        for f in files:
            rel = f"{f.parent.name}/{f.name}"
            (local / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, local / rel)
            client.upload_file(str(f), "bench", f"orl/{rel}")
        sources = {"local": str(local), "bucket": "s3://bench/orl/"}
        options = featcache.ExtractOptions(backbones=[backbone], weights=weights, progress=False,
                                           workers=args.workers)
        featcache.extract(str(local), str(work / "warm.zarr"), options)  # TensorFlow up, weights read once
        runs: dict[str, list[dict]] = {name: [] for name in sources}
        for r in range(args.rounds):
            for name in (list(sources) if r % 2 == 0 else list(sources)[::-1]):
                store = work / f"{name}-{r}.zarr"
                start = time.perf_counter()
                result = featcache.extract(sources[name], str(store), options)
                wall = time.perf_counter() - start
                cfg = result.configs[0]
                assert cfg.extracted == len(files), (name, cfg)
                runs[name].append({"wall_s": round(wall, 3), "wall_images_per_s": round(len(files) / wall, 2),
                                   "extract_images_per_s": round(cfg.images_per_s, 2)})
        best = {name: max(rs, key=lambda x: x["wall_images_per_s"]) for name, rs in runs.items()}
        ratio = {k: round(best["bucket"][k] / best["local"][k], 3) for k in ("wall_images_per_s",
                                                                             "extract_images_per_s")}
    finally:
        server.stop() if args.in_process else (server.terminate(), server.wait(10))
        shutil.rmtree(work, ignore_errors=True)

    print(f"{len(files)} ORL photos, backbone {backbone}, best of {args.rounds} rounds")
    print(f"{'source':8} {'wall s':>8} {'wall img/s':>11} {'extract img/s':>14}")
    for name, b in best.items():
        print(f"{name:8} {b['wall_s']:8.2f} {b['wall_images_per_s']:11.1f} {b['extract_images_per_s']:14.1f}")
    print(f"{'ratio':8} {'':8} {ratio['wall_images_per_s']:11.2f} {ratio['extract_images_per_s']:14.2f}   "
          "(bucket / local; target >= 0.8)")
    report = {"benchmark": "s3", "images": len(files), "backbone": backbone, "rounds": args.rounds,
              "workers": args.workers, "server": "moto on 127.0.0.1, " + ("a thread of this process" if args.in_process else "its own process"), "runs": runs, "best": best,
              "ratio_bucket_over_local": ratio, "python": platform.python_version(), "cpus": os.cpu_count(),
              "command": "python benchmarks/bench_s3.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
