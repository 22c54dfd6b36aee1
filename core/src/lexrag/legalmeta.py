"""A legal document's metadata: read from its own header, set or overridden by a sidecar
``NAME.meta.toml`` next to the file or by front matter at the top of a Markdown file; and
what it means on a given day (in force or not, allowed by a set of filters).

The header of a Vietnamese legal text has a fixed shape::

    QUỐC HỘI                 CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM
                             Độc lập - Tự do - Hạnh phúc
    Luật số: 45/2019/QH14    Hà Nội, ngày 20 tháng 11 năm 2019

    BỘ LUẬT
    LAO ĐỘNG

the issuing body, the số hiệu, the place and day of issue, the kind and title; the last
articles say from when it is in force ("Bộ luật này có hiệu lực thi hành từ ngày …") and
which earlier texts it ends ("Bộ luật Lao động số 10/2012/QH13 hết hiệu lực …"); an
amending law names what it amends in its title ("sửa đổi, bổ sung một số điều của …").
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import InvalidRequestError
from .types import STATUS_LABELS, DocumentMeta, RetrievalFilters, compare_key

#: The sidecar of ``NAME.txt`` (``.md``, …) is ``NAME.meta.toml``.
SIDECAR_SUFFIX = ".meta.toml"

#: The kinds of document, longest first (``Bộ luật`` before ``Luật``).
KINDS = (
    "Bộ luật",
    "Luật",
    "Pháp lệnh",
    "Nghị định",
    "Nghị quyết liên tịch",
    "Nghị quyết",
    "Thông tư liên tịch",
    "Thông tư",
    "Quyết định",
    "Chỉ thị",
    "Hiến pháp",
    "Lệnh",
    "Văn bản hợp nhất",
)
_KIND_BY_FOLD = {compare_key(k): k for k in KINDS}
_KIND_RE = "|".join(re.escape(k) for k in KINDS)

#: Issuing bodies as they are written in running text (a header writes them in capitals).
ISSUERS = (
    "Quốc hội",
    "Ủy ban Thường vụ Quốc hội",
    "Chủ tịch nước",
    "Chính phủ",
    "Thủ tướng Chính phủ",
    "Tòa án nhân dân tối cao",
    "Hội đồng Thẩm phán Tòa án nhân dân tối cao",
    "Viện kiểm sát nhân dân tối cao",
    "Ngân hàng Nhà nước Việt Nam",
    "Bộ Công an",
    "Bộ Quốc phòng",
    "Bộ Ngoại giao",
    "Bộ Tư pháp",
    "Bộ Tài chính",
    "Bộ Công Thương",
    "Bộ Lao động - Thương binh và Xã hội",
    "Bộ Giao thông vận tải",
    "Bộ Xây dựng",
    "Bộ Tài nguyên và Môi trường",
    "Bộ Thông tin và Truyền thông",
    "Bộ Nông nghiệp và Phát triển nông thôn",
    "Bộ Kế hoạch và Đầu tư",
    "Bộ Nội vụ",
    "Bộ Y tế",
    "Bộ Giáo dục và Đào tạo",
    "Bộ Khoa học và Công nghệ",
    "Bộ Văn hóa, Thể thao và Du lịch",
)
_ISSUER_BY_KEY = {compare_key(name): name for name in ISSUERS}

#: A số hiệu: number/year/issuer code, e.g. 45/2019/QH14, 145/2020/NĐ-CP, 10/2020/TT-BLĐTBXH;
#: without the year for many a Quyết định and the consolidated texts (1234/QĐ-TTg, 01/VBHN-VPQH).
SO_HIEU = re.compile(r"(?<![\w/])\d{1,4}(?:/\d{4})?/[A-ZĐ][A-Za-zĐđ0-9]+(?:-[A-Za-zĐđ0-9]+)*(?![\w/])")
_NUMBER_LINE = re.compile(rf"(?i)\b({_KIND_RE})?\s*số\s*:\s*({SO_HIEU.pattern})")
_DAY_WORDS = re.compile(r"ngày\s+(\d{1,2})\s+tháng\s+(\d{1,2})\s+năm\s+(\d{4})", re.IGNORECASE)
_DAY_SLASH = re.compile(r"ngày\s+(\d{1,2})/(\d{1,2})/(\d{4})", re.IGNORECASE)
# Searched through a whole code: each starts with a literal (fast to find), the kind before
# "này" is checked on the few matches (a case-insensitive pattern that starts with the kinds
# would be tried at every character).
_EFFECTIVE = re.compile(r"này có hiệu lực(?: thi hành)?(?: kể)? từ (ngày [^.;\n]{0,40})")
_REPLACED = re.compile(r"hết hiệu lực(?: thi hành)?(?: kể)? từ ngày (\w+(?: \w+)?) này có hiệu lực")
_KIND_BEFORE = re.compile(rf"(?:{_KIND_RE}|Văn bản)\s*$", re.IGNORECASE)
_AMENDS = re.compile(r"sửa đổi,? bổ sung[^.;\n]*", re.IGNORECASE)
_AMENDED_NAME = re.compile(rf"\bcủa\s+((?:{_KIND_RE})\s+[^.;,\n]+?)(?:\s+số\b|$)", re.IGNORECASE)
_FIRST_ARTICLE = re.compile(r"^\W*Điều\s+1\b.*$", re.MULTILINE)
_REPUBLIC = re.compile(r"CỘNG\s+HÒA\s+XÃ\s+HỘI", re.IGNORECASE)
#: How much of a text its header may take.
HEADER_CHARS = 3000


def _date(match: re.Match[str] | None) -> dt.date | None:
    if match is None:
        return None
    day, month, year = (int(g) for g in match.groups())
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def _day_in(text: str) -> dt.date | None:
    return _date(_DAY_WORDS.search(text) or _DAY_SLASH.search(text))


def _sentence_case(text: str) -> str:
    text = " ".join(text.split())
    return text[:1].upper() + text[1:].lower() if text.isupper() else text


def _kind_at_start(line: str) -> str | None:
    folded = compare_key(line.lstrip("#* \t"))
    for key, kind in _KIND_BY_FOLD.items():
        if folded == key or folded.startswith(key + " "):
            return kind
    return None


def _header(text: str) -> str:
    """The text before the first article (the header and the preamble), at most
    :data:`HEADER_CHARS`, and the first article's heading line."""
    head = text[:HEADER_CHARS]
    match = _FIRST_ARTICLE.search(head)
    return head if match is None else head[: match.end()]


def parse_header(text: str) -> DocumentMeta:
    """What the document says of itself: số hiệu, kind, issuer, day of issue (header), the day
    it takes effect and the texts it replaces (closing articles), what it amends (title)."""
    head = _header(text)
    fields: dict[str, Any] = {}
    number = _NUMBER_LINE.search(head)
    if number is not None:
        fields["so_hieu"] = number.group(2)
        if number.group(1):
            fields["kind"] = _KIND_BY_FOLD[compare_key(number.group(1))]
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("(") or _REPUBLIC.search(line) or ("số" in line.lower() and ":" in line):
            continue
        kind = _kind_at_start(line)
        if kind is not None and (line.lstrip("#* ").isupper() or line.startswith("#")):
            fields["kind"] = kind  # the title wins: "Luật số:" also heads a Bộ luật
            break
    republic = _REPUBLIC.search(head)
    if republic is not None:
        # The issuer's name in capitals, over up to three lines ("BỘ LAO ĐỘNG - THƯƠNG BINH /
        # VÀ XÃ HỘI"), above a rule of dashes or beside the republic's name.
        worded = [ln.strip() for ln in head[: republic.start()].splitlines() if any(c.isalpha() for c in ln)]
        run: list[str] = []
        for line in reversed(worded[-3:]):
            if not line.isupper():
                break
            run.insert(0, line)
        issuer = " ".join(run)
        if issuer and len(issuer) < 120:
            key = compare_key(" ".join(issuer.replace("-", " - ").split()))
            fields["issuer"] = _ISSUER_BY_KEY.get(key) or _sentence_case(issuer)
        issued = _day_in(head[republic.end() : republic.end() + 400])
        if issued is not None:
            fields["issued"] = issued
    for effective in _EFFECTIVE.finditer(text):
        # "… có hiệu lực từ ngày ký": in force from the day it was signed (issued).
        signed = compare_key(effective.group(1)).startswith("ngay ky")
        day = fields.get("issued") if signed else _day_in(effective.group(1))
        if day is not None and _KIND_BEFORE.search(text[max(0, effective.start() - 24) : effective.start()]):
            fields["effective"] = day
            break
    replaced = []
    for match in _REPLACED.finditer(text):
        if compare_key(match.group(1)) in _KIND_BY_FOLD:
            sentence = text[
                max(text.rfind(".", 0, match.start()), text.rfind("\n", 0, match.start())) + 1 : match.start()
            ]
            replaced.extend(SO_HIEU.findall(sentence))
    if replaced:
        fields["replaces"] = tuple(dict.fromkeys(replaced))
    numbers: list[str] = []
    names: list[str] = []
    # The preamble's "Căn cứ Luật sửa đổi, bổ sung …" cites the legal basis: not amended here.
    own = "\n".join(ln for ln in head.splitlines() if not compare_key(ln).startswith("can cu"))
    for match in _AMENDS.finditer(own):
        phrase = match.group(0)
        numbers.extend(n for n in SO_HIEU.findall(phrase) if n != fields.get("so_hieu"))
        name = _AMENDED_NAME.search(phrase)
        if name is not None:
            names.append(_sentence_case(name.group(1).strip()))
    # A number names the amended text exactly; its name ("Bộ luật hình sự") only when no
    # number is given.
    if numbers or names:
        fields["amends"] = tuple({compare_key(n): n for n in reversed(numbers or names)}.values())[::-1]
    return DocumentMeta(**fields)


# --- sidecars and front matter ----------------------------------------------------------------


def sidecar_path(path: Path) -> Path:
    """``NAME.meta.toml`` next to ``NAME.txt``."""
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def _checked(data: Any, where: str) -> dict[str, Any]:
    """``data`` validated as (part of) a :class:`DocumentMeta`; one line naming the key otherwise."""
    if not isinstance(data, Mapping):
        raise InvalidRequestError(f"{where}: expected a table of metadata keys, got {type(data).__name__}")
    try:
        meta = DocumentMeta.model_validate(dict(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"]) or "?"
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(DocumentMeta.model_fields)
            raise InvalidRequestError(f"{where}: unknown key {key!r} (known: {allowed})") from None
        raise InvalidRequestError(f"{where}: key {key!r}: {error['msg']}") from None
    return meta.model_dump(include=set(data))


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The metadata the sidecar of ``path`` sets (None when there is none);
    :class:`InvalidRequestError` naming the file and the key when it is not valid."""
    sidecar = sidecar_path(path)
    try:
        raw = sidecar.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidRequestError(f"{sidecar}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidRequestError(f"{sidecar}: not valid TOML ({exc})") from None
    return _checked(data, str(sidecar))


_FRONT = re.compile(r"\A(\+\+\+|---)[ \t]*\r?\n(.*?)\r?\n\1[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def split_front_matter(text: str, where: str = "front matter") -> tuple[dict[str, Any] | None, str]:
    """(the metadata of a leading ``+++`` TOML or ``---`` YAML block, the text after it);
    (None, text) when there is none."""
    match = _FRONT.match(text)
    if match is None:
        return None, text
    body = match.group(2)
    if match.group(1) == "+++":
        try:
            data: Any = tomllib.loads(body)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidRequestError(f"{where}: the +++ front matter is not valid TOML ({exc})") from None
    else:
        import yaml  # type: ignore[import-untyped]  # no stubs installed; safe_load only

        try:
            data = yaml.safe_load(body) or {}
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0]
            raise InvalidRequestError(
                f"{where}: the --- front matter is not valid YAML ({problem})"
            ) from None
    return _checked(data, f"{where} (front matter)"), text[match.end() :]


def document_meta(path: Path, text: str) -> tuple[DocumentMeta, str]:
    """A file's metadata (its header, then its front matter, then its sidecar, each
    overriding the one before) and its text without the front matter."""
    front, body = split_front_matter(text, str(path)) if path.suffix.lower() == ".md" else (None, text)
    fields = parse_header(body).model_dump()
    fields.update(front or {})
    fields.update(read_sidecar(path) or {})
    return DocumentMeta.model_validate(fields), body


# --- what metadata means on a day ----------------------------------------------------------------


def status_on(meta: DocumentMeta, day: dt.date) -> str | None:
    """The status on ``day``: the dates decide where they are known, the declared status
    otherwise; None when nothing is known."""
    if meta.expires is not None and meta.expires <= day:
        return "het-hieu-luc"
    if meta.effective is not None and meta.effective > day:
        return "chua-co-hieu-luc"
    if meta.status in ("het-hieu-luc", "chua-co-hieu-luc"):
        # Declared without the day it changed: a snapshot that still holds unless a date says
        # otherwise (an expired text with an effective day on or before ``day`` and an expiry
        # after it was in force then).
        if meta.status == "het-hieu-luc" and meta.expires is None:
            return "het-hieu-luc"
        if meta.status == "chua-co-hieu-luc" and meta.effective is None:
            return "chua-co-hieu-luc"
        return "con-hieu-luc"
    if meta.status is not None:
        return meta.status
    return "con-hieu-luc" if meta.effective is not None else None


#: Statuses that keep a document out of an in-force search.
NOT_IN_FORCE = frozenset({"het-hieu-luc", "chua-co-hieu-luc"})


def allows(filters: RetrievalFilters, doc_id: str, meta: DocumentMeta, today: dt.date) -> bool:
    """Whether retrieval under ``filters`` may use the document ``doc_id`` (see
    :class:`lexrag.types.RetrievalFilters`)."""
    if filters.doc is not None:
        wanted = {compare_key(d) for d in filters.doc}
        if compare_key(doc_id) not in wanted and (
            meta.so_hieu is None or compare_key(meta.so_hieu) not in wanted
        ):
            return False
    if filters.kind is not None and (
        meta.kind is None or compare_key(meta.kind) not in {compare_key(k) for k in filters.kind}
    ):
        return False
    status = status_on(meta, filters.as_of or today)
    if filters.status is not None:
        return status in filters.status
    if filters.in_force is False:
        return True
    if filters.in_force or filters.as_of is not None:
        return status not in NOT_IN_FORCE
    return status != "het-hieu-luc"


def status_reason(filters: RetrievalFilters, meta: DocumentMeta, today: dt.date) -> str | None:
    """Why ``filters`` leave out a document on account of its status alone (for the notice),
    or None when its status is not why."""
    if filters.status is not None or filters.in_force is False:
        return None
    day = filters.as_of or today
    status = status_on(meta, day)
    if status not in NOT_IN_FORCE or (
        status == "chua-co-hieu-luc" and not (filters.in_force or filters.as_of)
    ):
        return None
    if status == "het-hieu-luc":
        return "hết hiệu lực" + (f" từ {meta.expires:%d/%m/%Y}" if meta.expires else "")
    return "chưa có hiệu lực" + (f" (từ {meta.effective:%d/%m/%Y})" if meta.effective else "")


def describe(meta: DocumentMeta, status: str | None = None) -> str:
    """One line for people: ``45/2019/QH14 · Bộ luật · Quốc hội · hiệu lực từ 01/01/2021 · Còn hiệu lực``."""
    parts = [p for p in (meta.so_hieu, meta.kind, meta.issuer) if p]
    if meta.effective:
        parts.append(f"hiệu lực từ {meta.effective:%d/%m/%Y}")
    if meta.expires:
        parts.append(f"đến {meta.expires:%d/%m/%Y}")
    status = status or meta.status
    if status:
        parts.append(STATUS_LABELS.get(status, status))
    return " · ".join(parts)


__all__ = [
    "ISSUERS",
    "KINDS",
    "NOT_IN_FORCE",
    "SIDECAR_SUFFIX",
    "SO_HIEU",
    "allows",
    "describe",
    "document_meta",
    "parse_header",
    "read_sidecar",
    "sidecar_path",
    "split_front_matter",
    "status_on",
    "status_reason",
]
