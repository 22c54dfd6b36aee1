"""Connections to the index database: one pool per database URL and process, sensible
timeouts, the schema's versioned migrations, and one-line errors.

psycopg is imported inside the functions, so loading the plugin keeps ``lexrag --help`` fast.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from lexrag import RetrievalError, mask_url, redact

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

#: Seconds to wait for the server to answer a connection (libpq ``connect_timeout`` in the
#: URL wins).
CONNECT_TIMEOUT_S = 5
#: Longest statement; a stuck query fails instead of holding a server thread (``options=-c
#: statement_timeout=…`` in the URL wins).
STATEMENT_TIMEOUT_MS = 60_000
#: Connections one process keeps to one database (searches run in the server's threads).
POOL_MAX = 8

#: Advisory-lock keys (pg_advisory_xact_lock) of this plugin: schema changes, the embedder record.
LOCK_MIGRATE = 0x6C657872_61670001
LOCK_EMBEDDER = 0x6C657872_61670002

# --- migrations ------------------------------------------------------------------------------
# Each entry upgrades the schema from the version before it; the applied ones are listed in
# lexrag_schema_version. Never edit a released migration: add the next one.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE lexrag_meta (key text PRIMARY KEY, value text NOT NULL);
        -- One row: what BM25 needs of the whole collection, and a counter of committed changes.
        CREATE TABLE lexrag_stats (
            id int PRIMARY KEY CHECK (id = 1),
            generation bigint NOT NULL,
            n_chunks bigint NOT NULL,
            sum_body bigint NOT NULL,
            sum_head bigint NOT NULL
        );
        INSERT INTO lexrag_stats VALUES (1, 0, 0, 0, 0);
        CREATE TABLE lexrag_documents (
            id text PRIMARY KEY,
            title text NOT NULL,
            path text NOT NULL,
            sha256 text NOT NULL,
            n_chunks int NOT NULL,
            ingested_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE SEQUENCE lexrag_chunk_ids;
        -- embedding: typed vector(dim) with its HNSW index when the first vectors arrive.
        CREATE TABLE lexrag_chunks (
            id bigint PRIMARY KEY,
            chunk_id text NOT NULL UNIQUE,
            doc text NOT NULL REFERENCES lexrag_documents(id) ON DELETE CASCADE,
            seq int NOT NULL,
            part text,
            chapter text,
            section text,
            article int,
            article_title text,
            clauses int[] NOT NULL,
            text text NOT NULL,
            len_body int NOT NULL,
            len_head int NOT NULL,
            embedding vector
        );
        ALTER SEQUENCE lexrag_chunk_ids OWNED BY lexrag_chunks.id;
        CREATE INDEX lexrag_chunks_doc ON lexrag_chunks (doc);
        -- BM25 postings of two fields (body, heading): term counts and the chunk's lengths,
        -- so a query reads one index range per term (index-only) and scores in SQL.
        CREATE TABLE lexrag_postings (
            term text NOT NULL,
            chunk bigint NOT NULL,
            tf_body smallint NOT NULL,
            tf_head smallint NOT NULL,
            len_body int NOT NULL,
            len_head smallint NOT NULL,
            PRIMARY KEY (term, chunk) INCLUDE (tf_body, tf_head, len_body, len_head)
        );
        CREATE INDEX lexrag_postings_chunk ON lexrag_postings (chunk);
        """,
    ),
    (
        2,
        """
        -- Documents' legal metadata (lexrag.DocumentMeta as JSON; NULL: none known).
        ALTER TABLE lexrag_documents ADD COLUMN metadata jsonb;
        """,
    ),
    (
        3,
        """
        -- Counters of the per-key rate limits (lexrag.LimitStore), shared by every server on
        -- this database: one row per counter and fixed window, dropped once it expires.
        CREATE TABLE lexrag_rate_counters (
            counter text NOT NULL,
            window_start bigint NOT NULL,
            value bigint NOT NULL,
            expires bigint NOT NULL,
            PRIMARY KEY (counter, window_start)
        );
        """,
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a broken install
        raise RetrievalError(
            "the postgres index backend needs psycopg: `lexrag install 'psycopg[binary]' psycopg-pool`"
        ) from None
    return psycopg


def connect_kwargs(url: str) -> dict[str, Any]:
    """libpq parameters added to ``url`` unless it sets them: the connect timeout."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(url)
    except Exception as exc:
        raise RetrievalError(f"{mask_url(url)} is not a valid PostgreSQL URL: {redact(str(exc))}") from None
    return {} if "connect_timeout" in given else {"connect_timeout": CONNECT_TIMEOUT_S}


def _reason(exc: BaseException) -> str:
    text = " ".join(redact(str(exc)).split()) or type(exc).__name__
    return text[:300]


def unreachable(url: str, exc: BaseException) -> RetrievalError:
    return RetrievalError(
        f"cannot reach the index database {mask_url(url)}: {_reason(exc)} "
        "(check [index] database_url / LEXRAG_DATABASE_URL and that PostgreSQL is running)"
    )


def failed(url: str, exc: BaseException) -> RetrievalError:
    return RetrievalError(f"the index database {mask_url(url)} failed: {_reason(exc)}")


def _configure(conn: psycopg.Connection[Any]) -> None:
    options = str(conn.info.get_parameters().get("options", ""))
    if "statement_timeout" not in options:
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")


class Database:
    """One pool to one database URL, shared by every store and retriever of the process that
    opens that URL (reference-counted: the last close closes it)."""

    _shared: ClassVar[dict[str, Database]] = {}
    _lock = threading.Lock()

    def __init__(self, url: str, pool: ConnectionPool[Any]) -> None:
        self.url = url
        self.pool = pool
        self.users = 0

    @classmethod
    def acquire(cls, url: str, *, create: bool) -> Database:
        """The pool of ``url``, made on first use after checking that the server answers,
        that pgvector is there and that the schema is this plugin's (``create``: made or
        upgraded; otherwise only upgraded, and a missing one is an error)."""
        with cls._lock:
            db = cls._shared.get(url)
            if db is None:
                _prepare(url, create=create)
                db = cls(url, _make_pool(url))
                cls._shared[url] = db
            elif create:
                _prepare(url, create=True)
            db.users += 1
            return db

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users <= 0 and self._shared.get(self.url) is self:
                del self._shared[self.url]
                self.pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit: open a transaction with ``conn.transaction()``);
        errors of the database become one-line :class:`RetrievalError`."""
        psycopg = _psycopg()
        from psycopg_pool import PoolTimeout

        try:
            with self.pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise unreachable(self.url, exc) from None
        except psycopg.OperationalError as exc:
            raise unreachable(self.url, exc) from None
        except psycopg.Error as exc:
            raise failed(self.url, exc) from None


def _make_pool(url: str) -> ConnectionPool[Any]:
    from psycopg_pool import ConnectionPool

    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        min_size=1,
        max_size=POOL_MAX,
        kwargs={"autocommit": True, **connect_kwargs(url)},
        configure=_configure,
        timeout=CONNECT_TIMEOUT_S * 2,
        open=False,
        name="lexrag",
    )
    pool.open(wait=False)
    return pool


def _prepare(url: str, *, create: bool) -> None:
    """Connect once, directly (a clear error when that fails), and bring the schema up to date."""
    psycopg = _psycopg()
    try:
        conn = psycopg.connect(url, autocommit=True, **connect_kwargs(url))
    except psycopg.Error as exc:
        raise unreachable(url, exc) from None
    try:
        with conn:
            migrate(conn, url, create=create)
    except psycopg.OperationalError as exc:
        raise unreachable(url, exc) from None
    except psycopg.Error as exc:
        raise failed(url, exc) from None


def installed_version(conn: psycopg.Connection[Any]) -> int | None:
    """The schema version of the database, None when it has no lexrag index."""
    row = conn.execute("SELECT to_regclass('lexrag_schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    found = conn.execute("SELECT max(version) FROM lexrag_schema_version").fetchone()
    return None if found is None or found[0] is None else int(found[0])


def migrate(conn: psycopg.Connection[Any], url: str, *, create: bool) -> int:
    """Apply the migrations the database lacks, each in its own transaction, under an
    advisory lock (two servers starting at once do it once). Returns the version."""
    psycopg = _psycopg()
    version = installed_version(conn)
    if version == SCHEMA_VERSION:
        return version
    if version is not None and version > SCHEMA_VERSION:
        raise RetrievalError(
            f"the index in {mask_url(url)} has schema version {version}, newer than this "
            f"lexrag-postgres knows ({SCHEMA_VERSION}): upgrade lexrag-postgres"
        )
    if version is None and not create:
        raise RetrievalError(
            f"no lexrag index in the database {mask_url(url)}: run `lexrag ingest PATH...` with "
            '[index] backend = "postgres" first (or `lexrag index copy --to URL`)'
        )
    _ensure_pgvector(conn, url, psycopg)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_MIGRATE,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS lexrag_schema_version "
            "(version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    for number, sql in MIGRATIONS:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_MIGRATE,))
            done = conn.execute("SELECT 1 FROM lexrag_schema_version WHERE version = %s", (number,))
            if done.fetchone() is not None:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO lexrag_schema_version (version) VALUES (%s)", (number,))
    return SCHEMA_VERSION


def _ensure_pgvector(conn: psycopg.Connection[Any], url: str, psycopg: Any) -> None:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is not None:
        return
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_MIGRATE,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        raise RetrievalError(
            f"the database {mask_url(url)} lacks the pgvector extension and it could not be "
            f"created ({_reason(exc)}): install pgvector on the server (the pgvector/pgvector "
            "images have it) and run `CREATE EXTENSION vector` as a superuser"
        ) from None


__all__ = [
    "CONNECT_TIMEOUT_S",
    "MIGRATIONS",
    "POOL_MAX",
    "SCHEMA_VERSION",
    "STATEMENT_TIMEOUT_MS",
    "Database",
    "connect_kwargs",
    "migrate",
]
