"""Similar-case index benchmark: hnswlib (the library medws uses) vs exact search, and
at 100k also FAISS (HNSW-Flat) and usearch (HNSW) with the same graph parameters.

Vectors have the real embedding dimension.  "Real" vectors are embeddings of the shared
real radiographs (NIH + OpenIST, ``../shared/data/cxr``) computed by the installed
chest X-ray embedding model through ONNX Runtime; the rest, for scale, are generated
around them: ``normalise(real[j] + s * g)``, ``g ~ N(0, I/D)``, ``s ~ U(0.3, 1.0)`` -- a
clustered set with the real vectors' geometry.  Queries: held-back real vectors and
generated ones (never in the index).  Ground truth: exact inner-product top-10 (numpy).

Measured: build time (hnswlib ``add_items`` with N threads), memory (index size in RAM
from the saved file; process RSS growth), single-query latency p50/p95 (one query per
call, ``set_num_threads(threads)``), recall@10 against exact search for several ``ef``.
The 1M build is bounded (``--budget-min``): when the budget runs out the index is
measured as far as it got and the result says so.  The machine's load average is
recorded before and after (the build machine's 2 cores are shared).

Usage::

    python benchmarks/bench_cbir.py --sizes 100000 1000000 --threads 2 --budget-min 40
    python benchmarks/bench_cbir.py --sizes 2000 --queries 50 --out /tmp/x   # smoke
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

logger = logging.getLogger("bench_cbir")
DATA = ROOT.parent / "shared" / "data" / "cxr"
M, EF_CONSTRUCTION = 16, 100
EFS = (32, 64, 128, 256, 512)
K = 10


def real_embeddings(limit: int | None = None) -> tuple[np.ndarray, dict]:
    """Embeddings of the shared real radiographs by the installed CXR embedding model."""
    from PIL import Image

    from models.embedding import CxrEmbedder

    emb = CxrEmbedder(threads=2)
    files = sorted((DATA / "nih" / "images").glob("*.png")) + sorted((DATA / "normal-openist" / "images").glob("*.jpg"))
    files = files[:limit] if limit else files
    out = []
    for f in files:
        with Image.open(f) as im:
            out.append(emb.embed(np.asarray(im.convert("L"), np.float32)))
    return np.stack(out), {"model": emb.model.to_json(), "images": len(files)}


def generate(real: np.ndarray, n: int, seed: int, kind: str = "manifold") -> np.ndarray:
    """Generated unit vectors around the real ones.

    ``manifold`` (default): ``normalise(r_i + t (r_j - r_i) + s g)`` with ``r_j`` one of the
    10 nearest real neighbours of ``r_i``, ``t ~ U(0, 1)``, ``s ~ U(0, 0.15)``,
    ``g ~ N(0, I/D)``: points between neighbouring real cases, as a larger archive of
    similar images would fill in.  ``isotropic`` (stress case): ``normalise(r_i + s g)``
    with ``s ~ U(0.3, 1.0)`` -- full-dimensional noise clouds, the hardest case for HNSW.
    """
    rng = np.random.default_rng(seed)
    d = real.shape[1]
    i = rng.integers(len(real), size=n)
    g = rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    if kind == "isotropic":
        v = real[i] + rng.uniform(0.3, 1.0, size=(n, 1)).astype(np.float32) * g
    else:
        nn = np.argsort(-(real @ real.T), axis=1)[:, 1:11]
        j = nn[i, rng.integers(nn.shape[1], size=n)]
        t = rng.uniform(0, 1, size=(n, 1)).astype(np.float32)
        v = real[i] + t * (real[j] - real[i]) + rng.uniform(0, 0.15, size=(n, 1)).astype(np.float32) * g
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int = K, chunk: int = 64) -> np.ndarray:
    out = np.empty((len(queries), k), np.int64)
    for i in range(0, len(queries), chunk):
        sims = queries[i:i + chunk] @ data.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1)
        out[i:i + chunk] = np.take_along_axis(top, order, 1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def latencies(fn, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    res, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        res.append(fn(q))
        times.append(time.perf_counter() - t0)
    return np.stack(res), times


def pct(times: list[float]) -> dict:
    ms = 1000 * np.asarray(times)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bench_hnswlib(data: np.ndarray, queries: np.ndarray, truth: np.ndarray, threads: int, deadline: float,
                  tmp: Path) -> dict:
    import hnswlib

    n, d = data.shape
    rss0 = rss_mb()
    idx = hnswlib.Index(space="ip", dim=d)
    idx.init_index(max_elements=n, M=M, ef_construction=EF_CONSTRUCTION)
    idx.set_num_threads(threads)
    t0 = time.perf_counter()
    built = 0
    step = 20_000
    while built < n:
        idx.add_items(data[built:built + step], np.arange(built, min(n, built + step)))
        built = min(n, built + step)
        if time.monotonic() > deadline and built < n:
            logger.warning("build budget reached after %d of %d vectors", built, n)
            break
        if built % 100_000 == 0:
            logger.info("hnswlib: %d / %d added (%.0f s)", built, n, time.perf_counter() - t0)
    build_s = time.perf_counter() - t0
    path = tmp / "bench.hnsw"
    idx.save_index(str(path))
    size_mb = path.stat().st_size / 2**20
    path.unlink()
    if built < n:  # measure against the truth of what was indexed
        truth = exact_topk(data[:built], queries)
    out = {"library": "hnswlib", "version": "0.8", "M": M, "ef_construction": EF_CONSTRUCTION, "indexed": built,
           "complete": built == n, "build_s": round(build_s, 1), "index_mb": round(size_mb, 1),
           "rss_growth_mb": round(rss_mb() - rss0, 1), "by_ef": {}}
    for ef in EFS:
        idx.set_ef(ef)
        found, times = latencies(lambda q: idx.knn_query(q[None], k=K)[0][0], queries)
        out["by_ef"][ef] = {"recall_at_10": round(recall(found, truth), 4), **pct(times)}
    return out


def bench_faiss(data, queries, truth, threads) -> dict:
    import faiss

    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    idx = faiss.IndexHNSWFlat(data.shape[1], M, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = EF_CONSTRUCTION
    idx.add(data)
    out = {"library": "faiss-cpu IndexHNSWFlat", "version": faiss.__version__, "M": M,
           "ef_construction": EF_CONSTRUCTION, "build_s": round(time.perf_counter() - t0, 1), "by_ef": {}}
    for ef in EFS:
        idx.hnsw.efSearch = ef
        found, times = latencies(lambda q: idx.search(q[None], K)[1][0], queries)
        out["by_ef"][ef] = {"recall_at_10": round(recall(found, truth), 4), **pct(times)}
    return out


def bench_usearch(data, queries, truth, threads) -> dict:
    import usearch
    from usearch.index import Index

    t0 = time.perf_counter()
    idx = Index(ndim=data.shape[1], metric="ip", dtype="f32", connectivity=M, expansion_add=EF_CONSTRUCTION)
    idx.add(np.arange(len(data)), data, threads=threads)
    out = {"library": "usearch", "version": usearch.__version__, "M": M, "ef_construction": EF_CONSTRUCTION,
           "build_s": round(time.perf_counter() - t0, 1), "by_ef": {}}
    for ef in EFS:
        idx.expansion_search = ef
        found, times = latencies(lambda q: idx.search(q, K).keys, queries)
        out["by_ef"][ef] = {"recall_at_10": round(recall(found, truth), 4), **pct(times)}
    return out


def bench_exact(data, queries, n_lat: int = 100) -> dict:
    _, times = latencies(lambda q: np.argpartition(-(data @ q), K)[:K], queries[:n_lat])
    return {"library": "numpy exact (matrix-vector product + argpartition)", **pct(times)}


def run(sizes: list[int], threads: int, n_queries: int, budget_min: float, out: Path, compare_max: int,
        real_limit: int | None = None, generator: str = "manifold", name: str = "bench_cbir") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    real, info = real_embeddings(real_limit)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(real))
    n_real_q = min(len(real) // 4, n_queries // 2)
    real_q, real_db = real[perm[:n_real_q]], real[perm[n_real_q:]]
    queries = np.concatenate([real_q, generate(real_db, n_queries - n_real_q, seed=99, kind=generator)]).astype(np.float32)
    results = {"name": name, "generator": generator, "dim": int(real.shape[1]), "embedding": info, "threads": threads, "queries": len(queries),
               "real_queries": int(n_real_q), "k": K, "load_avg_start": load(), "cpus": os.cpu_count(),
               "sizes": {}}
    for n in sizes:
        data = np.concatenate([real_db, generate(real_db, max(0, n - len(real_db)), seed=n, kind=generator)])[:n].astype(np.float32)
        t0 = time.perf_counter()
        truth = exact_topk(data, queries)
        entry: dict = {"n": n, "real_vectors": int(min(n, len(real_db))), "truth_s": round(time.perf_counter() - t0, 1),
                       "load_avg_before": load()}
        entry["exact"] = bench_exact(data, queries)
        deadline = time.monotonic() + budget_min * 60
        entry["hnswlib"] = bench_hnswlib(data, queries, truth, threads, deadline, out)
        if n <= compare_max:
            for name, fn in (("faiss", bench_faiss), ("usearch", bench_usearch)):
                try:
                    entry[name] = fn(data, queries, truth, threads)
                except ImportError as e:
                    entry[name] = {"skipped": f"not installed: {e}"}
        entry["load_avg_after"] = load()
        results["sizes"][str(n)] = entry
        logger.info("n=%d done: %s", n, json.dumps(entry["hnswlib"]))
        write(results, out)
    results["wall_s"] = round(time.monotonic() - t_start)
    write(results, out)
    return results


def pick_ef(by_ef: dict, target: float = 0.95) -> str | None:
    ok = [ef for ef, r in by_ef.items() if r["recall_at_10"] >= target]
    return min(ok, key=int) if ok else None


def write(results: dict, out: Path) -> None:
    (out / f"{results['name']}.json").write_text(json.dumps(results, indent=1))
    lines = ["# bench_cbir: similar-case index", "",
             f"Embedding {results['embedding']['model']['name']} {results['embedding']['model']['version']} "
             f"(dim {results['dim']}), {results['embedding']['images']} real radiographs; {results['queries']} queries "
             f"({results['real_queries']} real, held back); generated vectors: {results['generator']}; "
             f"{results['threads']} threads; "
             f"load average at start {results['load_avg_start']} on {results['cpus']} CPUs (shared machine).", "",
             "| N | library | build s | index MB | ef | recall@10 | p50 ms | p95 ms |",
             "|---|---|---|---|---|---|---|---|"]
    for n, e in results["sizes"].items():
        lines.append(f"| {n} | exact (numpy) | - | - | - | 1.0 | {e['exact']['p50_ms']} | {e['exact']['p95_ms']} |")
        for lib in ("hnswlib", "faiss", "usearch"):
            r = e.get(lib)
            if not r or "by_ef" not in r:
                continue
            note = "" if r.get("complete", True) else f" (budget: {r['indexed']} indexed)"
            for ef, m in r["by_ef"].items():
                lines.append(f"| {n} | {lib}{note} | {r['build_s']} | {r.get('index_mb', '-')} | {ef} | "
                             f"{m['recall_at_10']} | {m['p50_ms']} | {m['p95_ms']} |")
        h = e["hnswlib"]
        ef = pick_ef(h["by_ef"])
        verdict = (f"smallest ef with recall@10 >= 0.95: {ef} (p95 {h['by_ef'][ef]['p95_ms']} ms)" if ef
                   else "no ef reached recall@10 0.95")
        lines.append("")
        lines.append(f"N={n}: {verdict}; load average before/after {e['load_avg_before']} / {e['load_avg_after']}.")
        lines.append("")
    (out / f"{results['name']}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--budget-min", type=float, default=40.0, help="wall-clock bound of each hnswlib build")
    ap.add_argument("--compare-max", type=int, default=100_000, help="largest N also run with faiss and usearch")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--generator", choices=("manifold", "isotropic"), default="manifold")
    ap.add_argument("--name", default="bench_cbir", help="results file name (without extension)")
    ap.add_argument("--real-limit", type=int, default=None, help="embed only the first N real radiographs (smoke)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run(a.sizes, a.threads, a.queries, a.budget_min, a.out, a.compare_max, a.real_limit, a.generator, a.name)


if __name__ == "__main__":
    main()
