"""Semantic cache lookup: embedding + search p50/p99 at 10 k / 100 k / 1 M entries, and memory per entry.

    .venv/bin/python benchmarks/semantic_lookup.py                       # 10k, 100k, 1M  (~15 min on 2 cores)
    .venv/bin/python benchmarks/semantic_lookup.py --sizes 10000 100000  # quicker
    .venv/bin/python benchmarks/semantic_lookup.py --embedders           # also model2vec (distilled locally)

Entries: the corpus's 3,000 distinct real questions, embedded with the packaged all-MiniLM-L6-v2, then spread to N
by adding Gaussian noise (sigma 0.02 a dimension: cosine 0.87 +- 0.02 to their origin) and renormalising, so that
neighbourhoods look like real paraphrase clusters rather than uniform noise (the worst case for HNSW). All N
entries sit in ONE partition (one tenant, one system prompt): the worst case for the stage, whose search only
ever sees one partition. Queries: 300 real questions from the corpus, embedded one at a time as the stage does
(one thread), then searched for the 4 nearest (the stage's ``candidates``).

Indexes: ``exact`` (``storage.vector_index.ExactIndex``, a float32 matrix-vector product), ``usearch`` (the
stage's ``AnnIndex`` with its shipped settings: HNSW, f16, M=16, expansion_add 64, ef=64) and ``hnswlib`` (M=16,
ef_construction 64, ef=64, float32) for comparison, each HNSW graph built with ``--threads`` (2); recall@1 of
each ANN index against exact search. Memory per entry: RSS growth of a ``SemanticStore`` (exact index) filled with
N entries of a realistic reply (a 90-token FAQ answer, 640 bytes of JSON), divided by N; an HNSW index adds its
own ``memory_usage`` (printed per size as ``index_bytes`` in the usearch row). Figures land in
``benchmarks/semantic_lookup.json`` and on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core for search, as the stage has (the other serves)

import numpy as np

from clawback.api.usage import Usage
from clawback.embeddings import StaticEmbedder, shared_embedder
from clawback.pipeline.semantic_cache.evaluate import corpus_path, load_pairs
from clawback.storage.response_cache import CachedReply
from clawback.storage.semantic_store import SemanticEntry, SemanticStore
from clawback.storage.vector_index import AnnIndex, ExactIndex

HERE = Path(__file__).resolve().parent
REPLY = json.dumps({"id": "msg_x", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
                    "content": [{"type": "text", "text": "Our office is open Monday to Friday from 9 am to 6 pm and on "
                                 "Saturdays from 10 am to 2 pm. Showings outside these hours can be booked with your "
                                 "agent, who will confirm the time by text or email within one business day. " * 2}],
                    "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": 812, "output_tokens": 90}}).encode()  # fmt: skip


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentiles(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.percentile(arr, 50)), 3), "p99_ms": round(float(np.percentile(arr, 99)), 3),
            "mean_ms": round(float(arr.mean()), 3)}  # fmt: skip


def texts() -> list[str]:
    pairs = [p for split in ("calibration", "test") for p in load_pairs(corpus_path(split))]  # the team's corpus
    return list(dict.fromkeys(t for p in pairs for t in (p.a, p.b)))


def spread(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        rows = base[rng.integers(0, len(base), stop - start)] + rng.normal(0, 0.02, (stop - start, base.shape[1]))
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def bench_index(name: str, vectors: np.ndarray, queries: np.ndarray, embed_s: list[float],
                args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    n, dim = vectors.shape
    ids = np.arange(1, n + 1, dtype=np.int64)
    params: dict[str, Any] = {}
    gc.collect()
    rss_before = rss()
    started = time.perf_counter()
    if name == "exact":
        index: Any = ExactIndex(dim, capacity=n)
        index._rows[:n] = vectors  # what n calls of add() leave, without timing a Python loop
        index._ids[:n] = ids
        index._where = {int(i): row for row, i in enumerate(ids)}

        def search(q: np.ndarray) -> list[int]:
            return [i for i, _ in index.search(q, 4)]
    elif name == "usearch":
        index = AnnIndex(dim)  # the stage's settings
        inner = index._index
        params = {"connectivity": inner.connectivity, "expansion_add": inner.expansion_add,
                  "expansion_search": inner.expansion_search, "dtype": "f16", "threads": args.threads}  # fmt: skip
        index.add_many(ids, vectors, threads=args.threads)

        def search(q: np.ndarray) -> list[int]:
            return [i for i, _ in index.search(q, 4)]
    else:
        import hnswlib

        params = {"M": 16, "ef_construction": args.hnswlib_ef_construction, "ef": 64, "threads": args.threads}
        index = hnswlib.Index(space="cosine", dim=dim)
        index.init_index(max_elements=n, M=16, ef_construction=args.hnswlib_ef_construction)
        index.set_num_threads(args.threads)
        index.add_items(vectors, ids)
        index.set_ef(64)

        def search(q: np.ndarray) -> list[int]:
            labels, _ = index.knn_query(q, k=4)
            return [int(x) for x in labels[0]]

    build_s = time.perf_counter() - started
    gc.collect()
    rss_grown = rss() - rss_before  # the index's own memory (the vectors it was built from are already counted)
    load_after_build = os.getloadavg()
    search(queries[0])
    found, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        found.append(search(q))
        times.append(time.perf_counter() - t0)
    lookups = [e + s for e, s in zip(embed_s, times, strict=True)]
    index_bytes = int(index.nbytes) if name in ("exact", "usearch") else None
    result = {"index": name, "entries": n, "params": params, "build_s": round(build_s, 1), "index_bytes": index_bytes,
              "index_rss_bytes_per_entry": rss_grown // n, "load_average_after_build": load_after_build,
              "search": percentiles(times), "lookup": percentiles(lookups), "top": [f[0] for f in found]}  # fmt: skip
    return result


def memory_per_entry(vectors: np.ndarray) -> dict[str, Any]:
    gc.collect()
    before = rss()
    store = SemanticStore(dim=vectors.shape[1], max_bytes=1 << 62, ann_above=len(vectors) + 1)  # exact index
    started = time.perf_counter()
    for i, vector in enumerate(vectors):
        reply = CachedReply(key=f"{i:032x}", body=REPLY, model="claude-haiku-4-5", usage=Usage(812, 90),
                            namespace="tenant-1")  # fmt: skip
        store.put(SemanticEntry(i + 1, "p" * 32, "What are your office hours on Saturday?", vector.copy(), reply), 3600)
    fill_s = time.perf_counter() - started
    gc.collect()
    grown = rss() - before
    n = len(vectors)
    result = {"entries": n, "rss_bytes_per_entry": grown // n, "index": "exact",
              "accounted_bytes_per_entry": store.bytes // n, "index_bytes_per_entry": store.index_bytes() // n,
              "fill_s": round(fill_s, 1)}  # fmt: skip
    del store
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--hnswlib-max", type=int, default=1_000_000, help="largest size hnswlib is built at")
    parser.add_argument("--ann-max", type=int, default=1_000_000, help="largest size usearch is built at")
    parser.add_argument("--hnswlib-ef-construction", type=int, default=64, help="hnswlib's ef_construction")
    parser.add_argument("--threads", type=int, default=2, help="threads of an HNSW build (search: one)")
    parser.add_argument("--no-memory", action="store_true", help="skip the SemanticStore memory measurement")
    parser.add_argument("--embedders", action="store_true", help="also time model2vec distilled from MiniLM")
    parser.add_argument("--out", default=str(HERE / "semantic_lookup.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    corpus = texts()
    embedder = shared_embedder("all-MiniLM-L6-v2", 1)
    t0 = time.perf_counter()
    embedder.load()
    load_s = time.perf_counter() - t0
    base = embedder.embed(corpus)
    questions = [corpus[i] for i in rng.choice(len(corpus), args.queries, replace=False)]
    embedder.embed(questions[:5])
    queries, embed_s = [], []
    for question in questions:  # one at a time, as the stage embeds a request's last user turn
        t = time.perf_counter()
        queries.append(embedder.embed([question])[0])
        embed_s.append(time.perf_counter() - t)
    queries_arr = np.stack(queries)
    report: dict[str, Any] = {
        "git": subprocess.run(["git", "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()[
            :80
        ],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
        "command": "benchmarks/semantic_lookup.py " + " ".join(sys.argv[1:]),
        "model": {"name": "all-MiniLM-L6-v2", "load_s": round(load_s, 1), "embed_one": percentiles(embed_s)},
        "sizes": [],
    }
    print(f"model load {load_s:.1f} s; embed one question p50 {report['model']['embed_one']['p50_ms']} ms "
          f"p99 {report['model']['embed_one']['p99_ms']} ms")  # fmt: skip
    if args.embedders:
        t = time.perf_counter()
        static = StaticEmbedder.distilled()
        distill_s = time.perf_counter() - t
        static.embed(questions[:5])
        times = []
        for question in questions:
            t = time.perf_counter()
            static.embed([question])
            times.append(time.perf_counter() - t)
        report["model2vec"] = {"distill_s": round(distill_s, 1), "embed_one": percentiles(times), "dim": static.dim}
        print("model2vec (distilled from the packaged MiniLM):", report["model2vec"])
    for n in args.sizes:
        vectors = spread(base, n, rng)
        exact_top: list[int] | None = None
        for name in ("exact", "usearch", "hnswlib"):
            if (name == "hnswlib" and n > args.hnswlib_max) or (name == "usearch" and n > args.ann_max):
                continue
            result = bench_index(name, vectors, queries_arr, embed_s, args)
            top = result.pop("top")
            if name == "exact":
                exact_top = top
            else:
                assert exact_top is not None
                result["recall_at_1_vs_exact"] = round(sum(a == b for a, b in zip(top, exact_top, strict=True))
                                                       / len(top), 3)  # fmt: skip
            report["sizes"].append(result)
            print(json.dumps(result), flush=True)
        if not args.no_memory:
            memory = memory_per_entry(vectors)
            report["sizes"].append({"memory": memory})
            print(json.dumps({"memory": memory}), flush=True)
        del vectors
        gc.collect()
    report["machine"]["load_average_at_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
