"""Client for `dict_queue`: Dict get/put ops/s from this client beside a plain SQLite loop, and the round trip
of a Queue item between two containers (one puts on a queue, the other answers on a second queue)."""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time

import modal

app = modal.App("bench-kv")
ping_q = modal.Queue.from_name("bench-kv-ping", create_if_missing=True)
pong_q = modal.Queue.from_name("bench-kv-pong", create_if_missing=True)


@app.function(timeout=600)
def answer(count: int) -> int:
    for _ in range(count):
        pong_q.put(ping_q.get(timeout=60))
    return count


@app.function(timeout=600)
def ask(count: int) -> list[float]:
    out = []
    for i in range(count):
        t0 = time.perf_counter()
        ping_q.put(i)
        pong_q.get(timeout=60)
        out.append(time.perf_counter() - t0)
    return out


def _sqlite_loop(count: int) -> tuple[float, float]:
    """(puts/s, gets/s) of a plain SQLite key-value table (WAL, synchronous=NORMAL, a commit per put)."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(os.path.join(tmp, "kv.db"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB)")
        t0 = time.perf_counter()
        for i in range(count):
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (str(i).encode(), b"v" * 100))
        puts = count / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(count):
            conn.execute("SELECT v FROM kv WHERE k = ?", (str(i).encode(),)).fetchone()
        gets = count / (time.perf_counter() - t0)
        conn.close()
    return puts, gets


def main() -> None:
    from _common import emit

    ops, round_trips = int(sys.argv[1]), int(sys.argv[2])
    d = modal.Dict.from_name("bench-kv-dict", create_if_missing=True)
    d.clear()
    d["warm"] = 1
    t0 = time.perf_counter()
    for i in range(ops):
        d[str(i)] = "v" * 100
    puts = ops / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(ops):
        d[str(i)]
    gets = ops / (time.perf_counter() - t0)
    sqlite_puts, sqlite_gets = _sqlite_loop(ops)

    ping_q.clear()
    pong_q.clear()
    with app.run():
        warmup = 20
        answering = answer.spawn(round_trips + warmup)
        times = ask.remote(round_trips + warmup)[warmup:]
        answering.get()
    emit(
        {
            "dict_puts_per_s": puts,
            "dict_gets_per_s": gets,
            "sqlite_puts_per_s": sqlite_puts,
            "sqlite_gets_per_s": sqlite_gets,
            "queue_round_trip_s": times,
        }
    )


if __name__ == "__main__":
    main()
