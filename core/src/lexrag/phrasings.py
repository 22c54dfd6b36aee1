"""Phrasings written by a language model: for each article of an index, a few short questions
and phrases in the words a layperson uses (doc2query), for the ``phrasings`` retriever.

``lexrag phrasings write OUT.jsonl`` asks the configured provider, through the router (its
retries, breaker, ``[llm] deadline_s`` and call log), once per article with
:func:`lexrag.prompt.phrasings_messages`, and appends one JSON line per article to OUT:
``{"doc": "<document id>", "article": <number>, "phrases": ["…", …]}``. Articles already in OUT
are skipped, so an interrupted or ``--limit``-ed run continues where it stopped; an article
whose call fails is counted and left out (the next run asks again), never ending the run.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import calllog, prompt
from .calllog import CallRecord
from .errors import InvalidRequestError, LexragError, NotFoundError
from .providers import GenerationParams, ProviderRequest
from .retrieval import Chunk, IndexStore

if TYPE_CHECKING:
    from .router import Route, Router

#: Characters of an article's text (after its heading) shown to the model.
ARTICLE_CHARS = 700
#: Longest phrase kept, in words (the prompt asks for 4–14).
MAX_WORDS = 25
#: Sampling temperature of the phrasings: a little variety between an article's phrases.
TEMPERATURE = 0.3

# A list marker a model may put before each line: "1.", "2)", "(3)", "-", "*", "•", "–".
_MARKER = re.compile(r"^(?:[-*•·–—+>]+|\(?\d{1,3}\s*[.):\]](?=\s|$)|\d{1,3}\s+[-–])\s*")
_QUOTES = "\"'“”‘’«»`*_ "

ArticleId = tuple[str, int]


@dataclass(frozen=True)
class Article:
    """One article of the index as the model sees it."""

    doc: str
    number: int
    title: str
    """The document's title."""
    text: str
    """The article's heading line, then the first :data:`ARTICLE_CHARS` characters of its text."""

    @property
    def key(self) -> ArticleId:
        return (self.doc, self.number)

    @property
    def label(self) -> str:
        return f"{self.doc} Điều {self.number}"


@dataclass
class PhrasingsReport:
    """What one run did."""

    articles: int
    """Articles of the chosen documents."""
    already: int
    """Of those, already in OUT (skipped)."""
    asked: int = 0
    written: int = 0
    phrases: int = 0
    failed: int = 0
    first_error: str | None = None
    """``<article>: <error>`` of the first article that failed."""
    seconds: float = 0.0

    @property
    def left(self) -> int:
        """Articles still without phrasings in OUT."""
        return self.articles - self.already - self.written

    @property
    def ok(self) -> bool:
        """False only when articles were asked for and none could be written."""
        return not self.asked or self.written > 0


def _article(doc: str, title: str, number: int, chunks: Sequence[Chunk]) -> Article:
    """The article's heading (the first line of its first chunk) and the start of its text;
    every chunk repeats the heading, which is read once."""
    heading, _, body = chunks[0].text.partition("\n")
    bodies = [body]
    for chunk in chunks[1:]:
        first, _, rest = chunk.text.partition("\n")
        bodies.append(rest if first == heading else chunk.text)
    text = "\n".join(b.strip() for b in bodies if b.strip())
    if len(text) > ARTICLE_CHARS:
        text = text[:ARTICLE_CHARS].rsplit(" ", 1)[0] + " …"
    return Article(doc, number, title, f"{heading}\n{text}".strip())


def index_articles(store: IndexStore, docs: Sequence[str] = ()) -> list[Article]:
    """The articles of ``docs`` (every document when empty), in document and article order;
    chunks outside any article are left out. A :class:`NotFoundError` names a document the
    index does not hold."""
    records = {r.id: r for r in store.documents()}
    unknown = [d for d in dict.fromkeys(docs) if d not in records]
    if unknown:
        known = ", ".join(sorted(records)[:8]) + (", …" if len(records) > 8 else "")
        raise NotFoundError(
            f"no document {unknown[0]!r} in the index {store.describe()} (its documents: {known or 'none'})",
            param="doc",
        )
    out: list[Article] = []
    for doc_id in dict.fromkeys(docs) if docs else sorted(records):
        chunks, _ = store.document_chunks(doc_id)
        grouped: dict[int, list[Chunk]] = {}
        for chunk in chunks:
            if chunk.citation.article is not None:
                grouped.setdefault(chunk.citation.article, []).append(chunk)
        title = records[doc_id].title
        out += [_article(doc_id, title, number, group) for number, group in grouped.items()]
    return out


def read_phrasings(path: Path) -> dict[ArticleId, list[str]]:
    """(document, article) → phrases of one phrasings file (``.jsonl``, or gzipped ``.jsonl.gz``):
    what :func:`write_phrasings` writes and the ``phrasings`` retriever reads. A ValueError names
    the file, and the line when one is not ``{"doc": str, "article": int, "phrases": [str, …]}``."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    out: dict[ArticleId, list[str]] = {}
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    doc, article, phrases = entry["doc"], entry["article"], entry["phrases"]
                    if not isinstance(doc, str) or type(article) is not int:
                        raise ValueError("doc must be a string and article a whole number")
                    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
                        raise ValueError("phrases must be a list of strings")
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(
                        f'{path} line {number}: expected {{"doc": …, "article": N, "phrases": […]}} '
                        f"({exc}); mend or delete that line"
                    ) from None
                out.setdefault((doc, article), []).extend(
                    p for p in (" ".join(p.split()) for p in phrases) if p
                )
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise ValueError(f"cannot read the phrasings file {path} ({why})") from None
    return out


def written_articles(path: Path) -> set[ArticleId]:
    """(document, article) of every line already in the phrasings file ``path`` (none when it
    does not exist); an :class:`InvalidRequestError` names a line that is not one."""
    if not path.exists():
        return set()
    try:
        return set(read_phrasings(path))
    except ValueError as exc:
        raise InvalidRequestError(f"{exc}, then run again") from None


def _ends_a_line(path: Path) -> bool:
    """Whether the file is empty or ends with a newline."""
    with path.open("rb") as fh:
        if fh.seek(0, 2) == 0:
            return True
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"


def parse_phrases(text: str, n: int) -> list[str]:
    """Up to ``n`` distinct phrases of a model's answer, one per line: list markers, quotes
    and emphasis stripped; empty lines, lines that introduce a list (ending in ``:``) and
    lines of more than :data:`MAX_WORDS` words dropped."""
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        while match := _MARKER.match(line):
            line = line[match.end() :]
        line = " ".join(line.strip(_QUOTES).split())
        if not line or line.endswith(":") or len(line.split()) > MAX_WORDS:
            continue
        if line.casefold() not in {p.casefold() for p in out}:
            out.append(line)
        if len(out) == n:
            break
    return out


async def ask_phrases(router: Router, route: Route, article: Article, n: int) -> list[str]:
    """``n`` phrasings of ``article`` from ``route``'s provider (no fallback), recorded as one
    call (``lexrag.calls``); a :class:`LexragError` when the call fails or the answer holds no
    usable phrase."""
    request = ProviderRequest(
        messages=prompt.phrasings_messages(article.title, article.text, n),
        params=GenerationParams(max_tokens=48 * n + 32, temperature=TEMPERATURE),
    )
    record = CallRecord(method="CLI", path="lexrag phrasings write", requested_model=route.model)
    with calllog.recording(record):
        try:
            completion = await router.complete(request, route=route, fallback=[])
        except LexragError as exc:
            record.error = exc.code or type(exc).__name__
            raise
        finally:
            record.write()
    phrases = parse_phrases(completion.text or "", n)
    if not phrases:
        answer = " ".join((completion.text or "").split())
        raise InvalidRequestError(
            f"the {route.provider} provider's answer held no phrase of at most {MAX_WORDS} words, "
            f"one per line: {answer[:80]!r}"
        )
    return phrases


@dataclass(frozen=True)
class Plan:
    """The articles a run asks for: those of the index not yet in OUT, at most ``limit``."""

    pending: list[Article]
    articles: int
    already: int


def plan(articles: Iterable[Article], out: Path, limit: int | None = None) -> Plan:
    """What a run writing to ``out`` asks for (an :class:`InvalidRequestError` for an ``out``
    that cannot be appended to or read)."""
    if out.suffix == ".gz":
        raise InvalidRequestError(f"{out}: write phrasings to a .jsonl file (gzip it when it is complete)")
    articles = list(articles)
    done = written_articles(out)
    pending = [a for a in articles if a.key not in done]
    return Plan(
        pending[:limit] if limit is not None else pending, len(articles), len(articles) - len(pending)
    )


async def write_phrasings(
    router: Router,
    route: Route,
    todo: Plan,
    out: Path,
    *,
    per_article: int = 4,
    concurrency: int = 4,
    progress: Callable[[Article, str], None] | None = None,
) -> PhrasingsReport:
    """Append the phrasings of every article ``todo`` holds to ``out``, ``concurrency`` calls
    at a time; ``progress(article, outcome)`` after each (``written`` or ``failed``)."""
    started = time.perf_counter()
    pending = todo.pending
    report = PhrasingsReport(articles=todo.articles, already=todo.already, asked=len(pending))
    queue = iter(pending)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as fh:
        if not _ends_a_line(out):  # a last line edited without its newline
            fh.write("\n")

        async def worker() -> None:
            for article in queue:  # one iterator shared by the workers of one event loop
                try:
                    phrases = await ask_phrases(router, route, article, per_article)
                except LexragError as exc:
                    report.failed += 1
                    if report.first_error is None:
                        report.first_error = f"{article.label}: {' '.join(str(exc).split())}"
                    outcome = "failed"
                else:
                    line = {"doc": article.doc, "article": article.number, "phrases": phrases}
                    fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                    fh.flush()  # what was written survives an interrupted run
                    report.written += 1
                    report.phrases += len(phrases)
                    outcome = "written"
                if progress is not None:
                    progress(article, outcome)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(pending)))))
    report.seconds = time.perf_counter() - started
    return report


__all__ = [
    "ARTICLE_CHARS",
    "MAX_WORDS",
    "Article",
    "PhrasingsReport",
    "Plan",
    "ask_phrases",
    "index_articles",
    "parse_phrases",
    "plan",
    "read_phrasings",
    "write_phrasings",
    "written_articles",
]
