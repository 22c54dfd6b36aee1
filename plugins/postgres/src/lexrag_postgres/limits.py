"""The counters of lexrag's per-key rate limits in the index database, so every server on it
counts a key's requests and tokens together (:class:`lexrag.LimitStore`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lexrag import Increment, LimitStore

if TYPE_CHECKING:
    from .db import Database

#: Increments between two sweeps of the counters whose window is over.
SWEEP_EVERY = 200


class PostgresLimits(LimitStore):
    """:class:`lexrag.LimitStore` over the table ``lexrag_rate_counters`` (migration 3); a
    class with a :class:`Database` as ``db`` inherits it."""

    db: Database
    _increments = 0

    def increment(self, items: Sequence[Increment]) -> tuple[bool, list[int]]:
        keys = sorted({(i.counter, i.window): i.expires for i in items}.items())
        with self.db.connection() as conn, conn.transaction():
            # Every row there first, then locked in one order: two servers never deadlock.
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO lexrag_rate_counters (counter, window_start, value, expires) "
                    "VALUES (%s, %s, 0, %s) ON CONFLICT DO NOTHING",
                    [(counter, window, expires) for (counter, window), expires in keys],
                )
            rows = conn.execute(
                "SELECT counter, window_start, value FROM lexrag_rate_counters "
                "WHERE (counter, window_start) IN (SELECT * FROM unnest(%s::text[], %s::bigint[])) "
                "ORDER BY counter, window_start FOR UPDATE",
                ([k[0][0] for k in keys], [k[0][1] for k in keys]),
            ).fetchall()
            counts = {(str(c), int(w)): int(v) for c, w, v in rows}
            current = [counts.get((i.counter, i.window), 0) for i in items]
            ok = all(
                i.ceiling is None or n + i.amount <= i.ceiling for i, n in zip(items, current, strict=True)
            )
            if not ok:
                return False, current
            added: dict[tuple[str, int], int] = {}
            for item in items:
                if item.amount:
                    key = (item.counter, item.window)
                    added[key] = added.get(key, 0) + item.amount
            if added:
                with conn.cursor() as cur:
                    cur.executemany(
                        "UPDATE lexrag_rate_counters SET value = value + %s "
                        "WHERE counter = %s AND window_start = %s",
                        [(amount, counter, window) for (counter, window), amount in added.items()],
                    )
            type(self)._increments += 1
            if type(self)._increments % SWEEP_EVERY == 0:
                conn.execute(
                    "DELETE FROM lexrag_rate_counters WHERE expires < %s", (min(i.window for i in items),)
                )
        return True, [n + i.amount for i, n in zip(items, current, strict=True)]


__all__ = ["SWEEP_EVERY", "PostgresLimits"]
