"""Retrieval within filters (law in force on a day, kind, document), for any retriever over
any index backend: a retriever that can restrict its search to the allowed documents
(:meth:`lexrag.Retriever.search_within`) is asked for their ``k`` best passages; any other is
asked for more passages until ``k`` of them come from documents the filters allow, or it has
no more. The documents' metadata comes from the index store, read again only when its
``generation`` moved on.

The catalog also links documents: one that replaces another (``replaces``) ends it on its own
effective day when the old one has no expiry of its own; one that amends another (``amends``)
is shown next to the articles it names (:class:`lexrag.types.Amendment`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import RetrievalError
from .legalmeta import NOT_IN_FORCE, allows, describe, status_on, status_reason
from .retrieval import Chunk, DocumentRecord, Hit, IndexStore, Retriever
from .types import Amendment, DocumentMeta, RetrievalFilters, Source, compare_key

#: Below this share of the index's chunks allowed, a search is restricted to the allowed
#: documents (:meth:`Retriever.search_within`); at or above it the catalog asks for a few more
#: passages and drops the others.
RESTRICT_BELOW = 0.5
#: Longest excerpt of an amending provision shown with a source.
AMENDMENT_CHARS = 800
#: An item of an amending article: "2. Sửa đổi, bổ sung khoản 1 Điều 105 như sau:".
_AMENDING_ITEM = re.compile(
    r"^\s*\d+[.)]\s*(?:Sửa đổi|Bổ sung|Bãi bỏ|Thay thế|Thay cụm|Hủy bỏ|Điều chỉnh)", re.IGNORECASE
)


@dataclass
class _Snapshot:
    """The store's documents at one generation."""

    generation: int
    records: dict[str, DocumentRecord]
    metas: dict[str, DocumentMeta]
    """Each document's metadata with what other documents say of it (an expiry from a
    replacing one)."""
    amended_by: dict[str, list[str]]
    n_chunks: int
    chunks: dict[str, list[Chunk]] = field(default_factory=dict)
    allowed: dict[tuple[str, dt.date], frozenset[str]] = field(default_factory=dict)


@dataclass
class FilteredHits:
    hits: list[Hit]
    day: dt.date
    """The day the statuses are for (``as_of`` or today)."""
    notice: str | None = None
    """Set when only documents left out for their status matched the query best."""


def _refers(ref: str, record: DocumentRecord) -> bool:
    """Whether ``ref`` (a số hiệu, document id or title in ``amends``/``replaces``) names ``record``."""
    folded = compare_key(ref)
    if folded in (compare_key(record.id), compare_key(record.metadata.so_hieu or "")):
        return True
    title = compare_key(record.title)
    return len(folded) > 6 and (title == folded or title.startswith(folded + " "))


def _snapshot(store: IndexStore) -> _Snapshot:
    generation = store.generation
    records = {r.id: r for r in store.documents()}
    metas = {doc_id: r.metadata for doc_id, r in records.items()}
    amended_by: dict[str, list[str]] = {}
    for newer in records.values():
        meta = newer.metadata
        for ref in meta.replaces:
            for old in records.values():
                if old.id != newer.id and _refers(ref, old) and meta.effective and not old.metadata.expires:
                    metas[old.id] = metas[old.id].model_copy(update={"expires": meta.effective})
    for newer in records.values():
        meta = newer.metadata
        for ref in meta.amends:
            targets = [t for t in records.values() if t.id != newer.id and _refers(ref, t)]
            day = meta.issued or meta.effective
            if len(targets) > 1 and day is not None:
                # A name ("Bộ luật lao động") fits every version of a code: the amendment is
                # to the one in force when it was passed.
                current = [t for t in targets if status_on(metas[t.id], day) not in NOT_IN_FORCE]
                targets = current or targets
            for target in targets:
                amended_by.setdefault(target.id, []).append(newer.id)
    return _Snapshot(generation, records, metas, amended_by, store.count_chunks())


class Catalog:
    """The documents of one index and their metadata, for filtering and for sources.

    ``open_store`` opens the index (:func:`lexrag.registry.open_index`); the catalog keeps
    the handle until :meth:`close`. Safe to share between threads."""

    def __init__(
        self, open_store: Callable[[], IndexStore], today: Callable[[], dt.date] = dt.date.today
    ) -> None:
        self._open = open_store
        self._today = today
        self._store: IndexStore | None = None
        self._snap: _Snapshot | None = None
        self._lock = threading.RLock()

    def snapshot(self) -> _Snapshot:
        """The documents now. With no index to open (a retriever that reads none), no
        document is known and every passage is allowed; opening is tried again next time."""
        with self._lock:
            if self._store is None:
                try:
                    self._store = self._open()
                except RetrievalError:
                    return _Snapshot(-1, {}, {}, {}, 0)
            if self._snap is None or self._snap.generation != self._store.generation:
                self._snap = _snapshot(self._store)
            return self._snap

    def _allowed(self, snap: _Snapshot, filters: RetrievalFilters, today: dt.date) -> frozenset[str]:
        """The documents ``filters`` allow, cached per store generation."""
        key = (filters.model_dump_json(), today)
        found = snap.allowed.get(key)
        if found is None:
            found = frozenset(d for d, meta in snap.metas.items() if allows(filters, d, meta, today))
            snap.allowed[key] = found
        return found

    def search(self, retriever: Retriever, query: str, k: int, filters: RetrievalFilters) -> FilteredHits:
        """The ``k`` best passages for ``query`` from the documents ``filters`` allow."""
        today = self._today()
        day = filters.as_of or today
        snap = self.snapshot()
        allowed = self._allowed(snap, filters, today)
        if len(allowed) == len(snap.records):
            return FilteredHits(retriever.search(query, k), day)

        def ok(hit: Hit) -> bool:
            return hit.chunk.citation.doc in allowed or hit.chunk.citation.doc not in snap.records

        allowed_chunks = sum(snap.records[d].n_chunks for d in allowed)
        share = allowed_chunks / snap.n_chunks if snap.n_chunks else 1.0
        # Most documents allowed (the default filters leave out only those no longer in
        # force): one search a little longer costs less than a restricted one plus the
        # unfiltered one the notice needs (hybrid, default filters: 1.03x the bare search
        # against 1.15x; bench/bench_filters.py).
        hits = retriever.search_within(query, k, allowed) if share < RESTRICT_BELOW else None
        if hits is None:
            hits, notice = self._over_fetch(snap, retriever, query, k, share, ok, filters, today)
        else:
            # The notice looks at the unfiltered k best (a retriever keeps what the two searches
            # of one query share: BM25's scores, the query vector).
            notice = self._notice(snap, retriever.search(query, k), ok, filters, today)
        return FilteredHits(hits, day, notice)

    def _over_fetch(
        self,
        snap: _Snapshot,
        retriever: Retriever,
        query: str,
        k: int,
        share: float,
        ok: Callable[[Hit], bool],
        filters: RetrievalFilters,
        today: dt.date,
    ) -> tuple[list[Hit], str | None]:
        """The first ``k`` allowed passages of ever longer rankings, for a retriever that
        cannot restrict its search, and the notice of the first ranking's ``k`` best."""
        # First ask for as many more as the allowed share of the chunks suggests (the k best
        # of that search are the unfiltered top k the notice looks at), then four times more
        # each round, until the retriever has no more to give (a retriever may return fewer
        # than asked and still have more: one that keeps one passage per article).
        asked = min(max(k, math.ceil(k / share) + k if share else k), max(snap.n_chunks, k))
        hits = retriever.search(query, asked)
        notice = self._notice(snap, hits[:k], ok, filters, today)
        kept = [h for h in hits if ok(h)]
        given = -1
        while len(kept) < k and share and asked < snap.n_chunks and len(hits) > given:
            given = len(hits)
            asked = min(asked * 4, snap.n_chunks)
            hits = retriever.search(query, asked)
            kept = [h for h in hits if ok(h)]
        return kept[:k], notice

    def _notice(
        self,
        snap: _Snapshot,
        hits: Sequence[Hit],
        ok: Callable[[Hit], bool],
        filters: RetrievalFilters,
        today: dt.date,
    ) -> str | None:
        """A notice when every one of the ``k`` best passages comes from a document left out
        for its status (no longer, or not yet, in force)."""
        if not hits or any(ok(h) for h in hits):
            return None
        reasons: dict[str, str] = {}
        for hit in hits:
            doc = hit.chunk.citation.doc
            reason = status_reason(filters, snap.metas[doc], today)
            if reason is not None and doc not in reasons:
                meta = snap.metas[doc]
                name = snap.records[doc].title + (f" ({meta.so_hieu})" if meta.so_hieu else "")
                reasons[doc] = f"{name}: {reason}"
        if not reasons:
            return None
        day = filters.as_of or today
        return (
            f"Chỉ các văn bản không còn hoặc chưa có hiệu lực vào ngày {day:%d/%m/%Y} khớp với câu hỏi, "
            f"nên không được dùng để trả lời: {'; '.join(reasons.values())}. "
            "Hỏi lại với bộ lọc khác (as_of, in_force: false) nếu cần tra văn bản cũ."
        )

    # --- sources ------------------------------------------------------------------------

    def sources(self, hits: Sequence[Hit], day: dt.date) -> list[Source]:
        """``hits`` as numbered sources with their document's metadata, status on ``day``
        and the provisions that amend their article."""
        snap = self.snapshot()
        out = []
        for i, hit in enumerate(hits):
            source = hit.to_source(i + 1)
            meta = snap.metas.get(source.doc)
            if meta is not None:
                status = status_on(meta, day)
                source = source.model_copy(
                    update={
                        "meta": None if meta.empty else meta,
                        "status": status,
                        "amended_by": self._amendments(snap, source.doc, source.article, day),
                    }
                )
            out.append(source)
        return out

    def _chunks(self, snap: _Snapshot, doc_id: str) -> list[Chunk]:
        with self._lock:
            if doc_id not in snap.chunks:
                assert self._store is not None
                snap.chunks[doc_id] = self._store.document_chunks(doc_id)[0]
            return snap.chunks[doc_id]

    def _amendments(self, snap: _Snapshot, doc_id: str, article: int | None, day: dt.date) -> list[Amendment]:
        if article is None or doc_id not in snap.amended_by:
            return []
        mention = re.compile(rf"\bĐiều\s+{article}(?!\d)")
        found = []
        for other in snap.amended_by[doc_id]:
            record = snap.records[other]
            for chunk in self._chunks(snap, other):
                excerpt = _provision(chunk.text, mention)
                if excerpt is not None:
                    found.append(
                        Amendment(
                            doc=other,
                            title=record.title,
                            so_hieu=snap.metas[other].so_hieu,
                            article=chunk.citation.article,
                            citation=chunk.citation.label(),
                            text=excerpt,
                            status=status_on(snap.metas[other], day),
                        )
                    )
        return found

    def close(self) -> None:
        with self._lock:
            store, self._store, self._snap = self._store, None, None
        if store is not None:
            store.close()


def _provision(text: str, mention: re.Pattern[str]) -> str | None:
    """The item of an amending article that names the article (``2. Sửa đổi, bổ sung khoản
    1 Điều 105 như sau: …`` with the new wording quoted under it, up to the next such item),
    or None."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if i == 0 or not mention.search(line):
            continue  # line 0 is the amending article's own heading
        start = i
        while start > 1 and not _AMENDING_ITEM.match(lines[start]):
            start -= 1
        if not _AMENDING_ITEM.match(lines[start]):
            start = i
        end = next((j for j in range(i + 1, len(lines)) if _AMENDING_ITEM.match(lines[j])), len(lines))
        excerpt = "\n".join(lines[start:end]).strip()
        return (
            excerpt if len(excerpt) <= AMENDMENT_CHARS else excerpt[:AMENDMENT_CHARS].rsplit(" ", 1)[0] + " …"
        )
    return None


__all__ = ["AMENDMENT_CHARS", "Catalog", "FilteredHits", "describe"]
