"""Connection pools and ledger inserts against PostgreSQL (on demand, not CI).

1. Per-request database cost: what one request's database work (a key-table read, one small SELECT) costs when
   each request opens its own connection (unpooled: SQLAlchemy ``NullPool``; raw ``psycopg.connect``) against
   pooled (SQLAlchemy ``QueuePool`` with and without pre-ping, which is what the gateway uses, and
   ``psycopg_pool.ConnectionPool``), from 1 thread and from 8 threads.
2. Sustained ledger inserts: ``LedgerWriter`` on the gateway's pool (``engine_from_settings``) storing N records
   submitted as fast as one thread can, batch sizes 32 (the default) and 500; rows/s from the first submit to
   the flush that stores the last one, and the rows counted in the table afterwards.

Runs in a scratch database ``clawback_bench_<random>`` on the server given (default the machine's shared
PostgreSQL at 127.0.0.1:5432), dropped at the end. Prints one JSON object as its last line.

    .venv/bin/python benchmarks/pool_bench.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import psycopg_pool
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from clawback.config import LedgerSettings
from clawback.storage.engine import engine_from_settings
from clawback.storage.keys import KeyStore
from clawback.storage.ledger import LedgerRecord, LedgerWriter
from clawback.storage.migrate import migrate

QUERY = "SELECT id, key_hash, labels, revoked_at FROM api_keys WHERE key_hash = %s"


def _timed(op: Callable[[], None], threads: int, per_thread: int) -> dict[str, float]:
    """Run ``op`` ``per_thread`` times in each of ``threads`` threads; µs per op (wall / total ops) and p50/p99."""
    samples: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        mine = []
        for _ in range(per_thread):
            t = time.perf_counter()
            op()
            mine.append(time.perf_counter() - t)
        with lock:
            samples.extend(mine)

    for _ in range(20):  # warm-up
        op()
    started = time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - started
    samples.sort()
    return {
        "us_per_request": round(wall / (threads * per_thread) * 1e6, 1),
        "p50_us": round(statistics.median(samples) * 1e6, 1),
        "p99_us": round(samples[int(len(samples) * 0.99)] * 1e6, 1),
    }


def per_request_cost(url: str, threads: int, per_thread: int) -> dict[str, dict[str, float]]:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    digest = "0" * 64
    results: dict[str, dict[str, float]] = {}

    def sqlalchemy_op(engine: Any) -> Callable[[], None]:
        def op() -> None:
            with engine.connect() as conn:
                conn.exec_driver_sql(QUERY, (digest,)).all()

        return op

    unpooled = create_engine(url, poolclass=NullPool)
    results["unpooled (SQLAlchemy NullPool)"] = _timed(sqlalchemy_op(unpooled), threads, per_thread)
    unpooled.dispose()

    def raw_connect() -> None:
        with psycopg.connect(dsn) as conn:
            conn.execute(QUERY, (digest,)).fetchall()

    results["unpooled (psycopg.connect)"] = _timed(raw_connect, threads, per_thread)

    settings = LedgerSettings(url=url, pool_size=max(threads, 1), pool_max_overflow=0)
    pooled = engine_from_settings(settings)
    results["SQLAlchemy QueuePool + pre-ping (the gateway's)"] = _timed(sqlalchemy_op(pooled), threads, per_thread)
    pooled.dispose()
    no_ping = engine_from_settings(settings.model_copy(update={"pool_pre_ping": False}))
    results["SQLAlchemy QueuePool, no pre-ping"] = _timed(sqlalchemy_op(no_ping), threads, per_thread)
    no_ping.dispose()

    with psycopg_pool.ConnectionPool(dsn, min_size=threads, max_size=threads, open=True) as pg_pool:
        pg_pool.wait()

        def pg_pool_op() -> None:
            with pg_pool.connection() as conn:
                conn.execute(QUERY, (digest,)).fetchall()

        results["psycopg_pool.ConnectionPool"] = _timed(pg_pool_op, threads, per_thread)
    return results


def _record(i: int, t0: datetime) -> LedgerRecord:
    """A request of realistic shape: 5,000 users, conversations of 10 requests, an agent on one in 20, so that the
    entity rollups and their running totals (migration 0007) are maintained as on real traffic."""
    started = t0 + timedelta(milliseconds=i)
    return LedgerRecord(
        request_id=f"bench-{i:09d}", started_at=started, finished_at=started + timedelta(milliseconds=400),
        model="claude-sonnet-4-5", endpoint="messages", status=200, latency_ms=400.0, key_id="key_bench",
        team="bench", feature="insert", user=f"user-{i % 5000}", session_id=f"conv-{i // 10}",
        agent_id=f"agent-{i % 300}" if i % 20 == 0 else None, input_tokens=1200 + i % 300, output_tokens=64,
        cost_micro_usd=4560 + i % 97, counterfactual_micro_usd=5000 + i % 97, savings_micro_usd={"prompt_cache": 440},
        upstream_request_id=f"r{i}",
    )  # fmt: skip


def sustained_inserts(url: str, count: int, batch_size: int, tmp: str) -> dict[str, Any]:
    settings = LedgerSettings(url=url, batch_size=batch_size, queue_size=count + 10, flush_interval_s=0.05,
                              journal_path=os.path.join(tmp, f"bench-{batch_size}.journal"))  # fmt: skip
    engine = engine_from_settings(settings)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE ledger"))
    t0 = datetime.now(UTC)
    records = [_record(i, t0) for i in range(count)]
    writer = LedgerWriter.from_settings(settings, url=engine)
    writer.open()
    started = time.perf_counter()
    for record in records:
        writer.submit(record)
    writer.flush()
    elapsed = time.perf_counter() - started
    stats = writer.stats()
    writer.close()
    with engine.connect() as conn:
        stored = int(conn.execute(text("SELECT count(*) FROM ledger")).scalar_one())
    engine.dispose()
    return {
        "batch_size": batch_size,
        "records": count,
        "stored": stored,
        "journaled": stats.journaled,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(count / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--requests", type=int, default=2000, help="per mode, in all threads")
    parser.add_argument("--inserts", type=int, default=50_000)
    args = parser.parse_args()
    admin = create_engine(args.url, isolation_level="AUTOCOMMIT")
    name = f"clawback_bench_{secrets.token_hex(5)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(args.url).set(database=name).render_as_string(hide_password=False)
    import tempfile

    report: dict[str, Any] = {"server": args.url, "load_avg": os.getloadavg()}
    try:
        migrate(url)
        KeyStore(url).create("bench")
        for threads in (1, 8):
            costs = per_request_cost(url, threads, args.requests // threads)
            report[f"per_request_threads_{threads}"] = costs
            unpooled = costs["unpooled (SQLAlchemy NullPool)"]["us_per_request"]
            pooled = costs["SQLAlchemy QueuePool + pre-ping (the gateway's)"]["us_per_request"]
            report[f"pooled_vs_unpooled_threads_{threads}"] = {
                "pooled_us": pooled, "unpooled_us": unpooled, "saving": round(1 - pooled / unpooled, 3),
            }  # fmt: skip
            print(f"threads={threads}: " + json.dumps(costs, indent=1), flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            report["inserts"] = [sustained_inserts(url, args.inserts, batch, tmp) for batch in (32, 500)]
        for row in report["inserts"]:
            print(f"inserts batch {row['batch_size']}: {row['rows_per_s']} rows/s ({row['stored']} stored)", flush=True)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
