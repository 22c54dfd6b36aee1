"""Per-key limits across server processes: two ``lexrag serve`` on one PostgreSQL database
(pgserver) count a key's requests together, in the table of migration 3."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from lexrag import Increment

from .fixtures_postgres import PgServer
from .test_reload import Serve

pytest.importorskip("lexrag_postgres")
pytestmark = pytest.mark.slow

KEY = "sk-shared-SECRET-pg"


def test_two_servers_on_one_database_share_a_limit(pg_server: PgServer, tmp_path: Path):
    from lexrag_postgres.store import PostgresStore

    url = pg_server.create_database("limits")
    store = PostgresStore.open(url, create=True)
    try:
        # The contract, straight: all or nothing, amount 0 reads.
        counter = [Increment("k:requests", 0, 1, 60, ceiling=1), Increment("k:tokens", 0, 0, 60, ceiling=9)]
        assert store.increment(counter) == (True, [1, 0])
        assert store.increment(counter) == (False, [1, 0])
        assert store.increment([Increment("k:tokens", 0, 10, 60)]) == (True, [10])
    finally:
        store.close()

    config = tmp_path / "lexrag.toml"
    config.write_text(
        '[llm]\nprovider = "extractive"\n[retrieval]\nenabled = false\n'
        f'[index]\nbackend = "postgres"\ndatabase_url = "{url}"\n'
        f'[server.keys.shared]\nkey = "{KEY}"\nrpm = 3\n',
        encoding="utf-8",
    )
    servers = [Serve(config), Serve(config)]
    try:
        if time.time() % 60 > 54:  # four requests must fall in one minute
            time.sleep(60.5 - time.time() % 60)
        auth = {"Authorization": f"Bearer {KEY}"}
        answers = [httpx.get(f"{servers[i % 2].base}/v1/models", headers=auth, timeout=30) for i in range(4)]
    finally:
        output = "".join(server.stop() for server in servers)
    assert [a.status_code for a in answers] == [200, 200, 200, 429], output
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0"]
    assert answers[3].json()["error"]["code"] == "rate_limit_exceeded"
    assert "per process" not in output  # the database held the counts, not each process
