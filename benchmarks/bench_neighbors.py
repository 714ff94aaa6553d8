"""Benchmark: `featcache neighbors` and the audit's exact cosine k-NN search.

1. ORL end to end: `neighbors()` on all 400 ORL photo files against a store of the same photos
   (efficientnet_lite0, 224 px): how often the top-5 neighbours (the photo itself left out) are the
   same person, and whether each photo finds itself first.
2. Synthetic rows (non-negative clustered vectors, like pooled ReLU features): the exact chunked
   search of 1, 10 and 100 queries over --rows rows, and the audit's all-against-all search over
   --self-rows rows. With faiss-cpu importable, the same searches through faiss' exact IndexFlatIP
   and its approximate IndexHNSWFlat (build time, query time, recall@10 against exact).
3. With --pictures DIR: the audit of ORL with known problems (20 moved photos, 10 JPEG copies, a
   blank image, an ImageNet photo; tests/audit_data.py) at 224 px, its contact sheets and map
   copied to DIR (README's pictures: docs/audit).

Usage:  python benchmarks/bench_neighbors.py [--rows 100000] [--self-rows 10000,20000] [--pictures docs/audit]
Writes benchmarks/results/neighbors.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from featcache.audit import AuditOptions, audit, neighbors, search, unit_rows  # noqa: E402
from featcache.extraction import ExtractOptions, extract  # noqa: E402
from featcache.ingest.sample_data import fetch  # noqa: E402

BACKBONE = "efficientnet_lite0"
RESULTS = Path(__file__).parent / "results" / "neighbors.json"
QUERY_COUNTS = (1, 10, 100)
K = 10


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_orl(work: Path) -> dict:
    data = fetch("orl-faces")
    store = work / "orl_224.zarr"
    extract(data, store, ExtractOptions(backbones=[BACKBONE], progress=True))  # reused when complete
    files = sorted(data.glob("s*/*.pgm"))
    start = time.perf_counter()
    result = neighbors(store, BACKBONE, files, k=6, progress=True)
    seconds = time.perf_counter() - start
    same, itself = [], []
    for path, q in zip(files, result.queries, strict=True):
        rel = path.relative_to(data).as_posix()
        itself.append(q.neighbors[0].image.path == rel)
        others = [n for n in q.neighbors if n.image.path != rel][:5]
        same.append(np.mean([n.image.label == path.parent.name for n in others]))
    return {"queries": len(files), "rows": result.rows, "top5_same_person_rate": float(np.mean(same)),
            "all_five_same_person": float(np.mean(np.asarray(same) == 1.0)),
            "finds_itself_first": float(np.mean(itself)),
            "min_self_similarity": min(q.neighbors[0].similarity for q in result.queries),
            "seconds": seconds, "stages": result.seconds}


def synthetic(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """Non-negative clustered vectors: 1,000 cluster centres plus noise, clipped at 0 like ReLU features."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, (1000, dim)).astype(np.float32)
    X = np.empty((rows, dim), np.float32)
    for s in range(0, rows, 10000):  # in blocks: no float64 temporaries of the whole matrix
        n = min(10000, rows - s)
        X[s:s + n] = centres[rng.integers(0, 1000, n)] + rng.normal(0, 0.7, (n, dim)).astype(np.float32)
    return np.maximum(X, 0, out=X)


def bench_exact(rows: int, dim: int, self_rows: list[int]) -> dict:
    X = synthetic(rows, dim)
    start = time.perf_counter()
    U = unit_rows(X)
    out = {"rows": rows, "dim": dim, "normalise_s": time.perf_counter() - start, "query_s": {}, "self_s": {}}
    del X
    queries = U[np.random.default_rng(1).choice(rows, max(QUERY_COUNTS), replace=False)]
    for q in QUERY_COUNTS:
        out["query_s"][q] = best_of(lambda q=q: search(U, queries[:q], K))
    self_found = {}
    for n in self_rows:
        start = time.perf_counter()
        self_found[n] = search(U[:n], None, K).indices
        out["self_s"][n] = time.perf_counter() - start
    return out, U, queries, self_found


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / exact.shape[1] for a, e in zip(approx, exact, strict=True)]))


def bench_faiss(U: np.ndarray, queries: np.ndarray, self_found: dict[int, np.ndarray]) -> dict | None:
    try:
        import faiss
    except ImportError:
        return None
    exact = search(U, queries, K).indices
    out = {"version": faiss.__version__, "threads": faiss.omp_get_max_threads()}
    flat = faiss.IndexFlatIP(U.shape[1])
    start = time.perf_counter()
    flat.add(U)
    out["flat_add_s"] = time.perf_counter() - start
    out["flat_query_s"] = {q: best_of(lambda q=q: flat.search(queries[:q], K)) for q in QUERY_COUNTS}
    hnsw = faiss.IndexHNSWFlat(U.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efSearch = 64
    start = time.perf_counter()
    hnsw.add(U)
    out["hnsw_build_s"] = time.perf_counter() - start
    out["hnsw_query_s"] = {q: best_of(lambda q=q: hnsw.search(queries[:q], K)) for q in QUERY_COUNTS}
    out["hnsw_recall_at_10"] = recall(hnsw.search(queries, K)[1], exact)
    out["hnsw_self_s"], out["hnsw_self_recall_at_10"] = {}, {}
    for n, exact_self in self_found.items():  # the audit's search: build on n rows, query each of them
        start = time.perf_counter()
        index = faiss.IndexHNSWFlat(U.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
        index.add(U[:n])
        found = index.search(U[:n], K + 1)[1]
        out["hnsw_self_s"][n] = time.perf_counter() - start
        # drop each row itself (normally first); keep K others
        others = np.array([[j for j in row if j != i][:K] for i, row in enumerate(found)])
        out["hnsw_self_recall_at_10"][n] = recall(others, exact_self)
    return out


def bench_audit_pictures(work: Path, pictures: Path) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from audit_data import modified_orl

    data = work / "orl_problems"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(work / "orl_problems.zarr", ignore_errors=True)
    truth = modified_orl(data, fetch("orl-faces"), fetch("imagenet-samples"))
    start = time.perf_counter()
    extract(data, work / "orl_problems.zarr", ExtractOptions(backbones=[BACKBONE], progress=True))
    extract_s = time.perf_counter() - start
    result = audit(work / "orl_problems.zarr", BACKBONE, AuditOptions(sheet_size=24), out=work / "orl_report",
                   progress=True)
    pictures.mkdir(parents=True, exist_ok=True)
    for name in ("label_issues_sheet", "duplicates_sheet", "outliers_sheet", "map"):
        shutil.copy(result.files[name], pictures / Path(result.files[name]).name)
    top40 = {x.image.path: x.suggested for x in result.label_issues[:40]}
    outliers = [o.image.path for o in result.outliers]
    return {"images": result.n_images, "extract_s": extract_s, "audit_s": result.seconds,
            "moved_in_top40": sum(p in top40 for p in truth["moved"]),
            "moved_true_person_suggested": sum(top40.get(p) == person for p, person in truth["moved"].items()),
            "label_issues": len(result.label_issues), "duplicate_groups": len(result.duplicates),
            "copies_found": sum(frozenset(pair) in {frozenset(im.path for im in g.images) for g in result.duplicates}
                                for pair in truth["copies"].items()),
            "outlier_ranks": {p: outliers.index(p) + 1 if p in outliers else None for p in truth["odd"]},
            "outliers_flagged": len(outliers), "pictures": str(pictures)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--self-rows", default="10000,20000",
                    help="Sizes of the all-against-all search (the audit's), comma-separated; '' for none.")
    ap.add_argument("--skip-orl", action="store_true")
    ap.add_argument("--pictures", type=Path, default=None, help="Also audit ORL with known problems; pictures here.")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "featcache-bench")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    self_rows = [int(s) for s in args.self_rows.split(",") if s]

    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                          "load_avg_1m": os.getloadavg()[0]}, "k": K}
    if not args.skip_orl:
        print("ORL neighbours ...", file=sys.stderr)
        result["orl"] = bench_orl(args.work)
    print(f"exact search over {args.rows} synthetic rows ...", file=sys.stderr)
    result["exact"], U, queries, self_found = bench_exact(args.rows, args.dim, self_rows)
    print("faiss ...", file=sys.stderr)
    result["faiss"] = bench_faiss(U, queries, self_found)
    if args.pictures:
        print("audit of ORL with known problems ...", file=sys.stderr)
        result["audit_orl"] = bench_audit_pictures(args.work, args.pictures)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))

    if "orl" in result:
        o = result["orl"]
        print(f"\nORL, {o['queries']} photo files against {o['rows']} stored rows ({BACKBONE}, 224 px): "
              f"top-5 same person {o['top5_same_person_rate']:.3f} (all five: {o['all_five_same_person']:.3f}); "
              f"finds itself first {o['finds_itself_first']:.3f} (similarity >= {o['min_self_similarity']:.4f}); "
              f"{o['seconds']:.1f} s ({o['stages']})")
    e, f = result["exact"], result["faiss"]
    print(f"\n{e['rows']} rows x {e['dim']} dims, k={K}; normalising the rows {e['normalise_s']:.2f} s")
    print(f"{'queries':>8} {'exact (featcache) s':>20} {'faiss flat s':>13} {'faiss HNSW s':>13}")
    for q in QUERY_COUNTS:
        print(f"{q:>8} {e['query_s'][q]:>20.4f} {f['flat_query_s'][q] if f else float('nan'):>13.4f} "
              f"{f['hnsw_query_s'][q] if f else float('nan'):>13.4f}")
    if f:
        print(f"faiss {f['version']}: flat add {f['flat_add_s']:.2f} s; HNSW (M=32, efSearch=64) build "
              f"{f['hnsw_build_s']:.1f} s, recall@10 {f['hnsw_recall_at_10']:.3f}")
    else:
        print("faiss not installed: no comparison")
    for n, s in e["self_s"].items():
        approx = f"; faiss HNSW build + search {f['hnsw_self_s'][n]:.1f} s, recall@10 " \
                 f"{f['hnsw_self_recall_at_10'][n]:.3f}" if f else ""
        print(f"all-against-all (the audit's search) over {n} rows: exact {s:.1f} s{approx}")
    if "audit_orl" in result:
        a = result["audit_orl"]
        print(f"\naudit of ORL with known problems ({a['images']} images, 224 px): moved photos in the top 40 "
              f"{a['moved_in_top40']}/20, true person suggested {a['moved_true_person_suggested']}; copies found "
              f"{a['copies_found']}/10 in {a['duplicate_groups']} groups; outlier ranks {a['outlier_ranks']}; "
              f"extract {a['extract_s']:.1f} s, audit {a['audit_s']}; pictures in {a['pictures']}")
    print(f"\nwritten {RESULTS}")


if __name__ == "__main__":
    main()
