"""Pydantic models for everything that crosses a process boundary, in OpenAI's shapes."""

from __future__ import annotations

import datetime as dt
import re
import time
import unicodedata
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError


def new_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class NoSettings(BaseModel):
    """Settings model of a plugin class that takes none: its config table must be empty."""

    model_config = ConfigDict(extra="forbid")


# --- requests -------------------------------------------------------------------------


def _surrogate_error(text: str, where: str = "") -> PydanticCustomError | None:
    """An error for a lone surrogate in ``text`` (JSON's ``"\\ud800"``, or bytes that are not
    UTF-8 read with ``surrogateescape``): no tokenizer, encoder or socket can take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        at = f" in {where}" if where else ""
        return PydanticCustomError(
            "invalid_text",
            "is not valid Unicode text: a lone surrogate (U+{code}) at character {position}{at}; "
            "send UTF-8 text",
            {"code": f"{ord(text[exc.start]):04X}", "position": exc.start, "at": at},
        )
    return None


def valid_text(value: Any) -> Any:
    """``value``, or a validation error when it is a string holding a lone surrogate (a
    ``mode="before"`` validator: length constraints could not even measure such a string)."""
    error = _surrogate_error(value) if isinstance(value, str) else None
    if error is not None:
        raise error
    return value


def _first_bad_string(value: Any, path: str = "") -> tuple[str, str] | None:
    if isinstance(value, str):
        return (path, value) if _surrogate_error(value) is not None else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _first_bad_string(str(key), f"{path}.{key}" if path else str(key))
            found = found or _first_bad_string(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _first_bad_string(item, f"{path}[{i}]")
            if found:
                return found
    return None


def valid_json(value: Any) -> Any:
    """``value`` (any JSON), or a validation error naming where a lone surrogate sits in it."""
    found = _first_bad_string(value)
    if found is not None:
        where, text = found
        error = _surrogate_error(text, where)
        assert error is not None
        raise error
    return value


def integral(value: Any) -> Any:
    """``5.0`` as ``5`` for a strict integer field (a ``mode="before"`` validator): JSON
    Schema counts it an integer; ``"5"``, ``true`` and ``5.5`` stay errors."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: A string of a request: valid Unicode (no lone surrogates).
Text = Annotated[str, BeforeValidator(valid_text)]
#: Any JSON value of a request (tools, metadata, an unknown OpenAI field), its strings valid Unicode.
Json = Annotated[Any, AfterValidator(valid_json)]

#: Request models are strict: ``"stream": "yes"``, ``"rag": 0`` or ``"temperature": "0.5"``
#: are errors, as the schema says, not values coerced into something else.
_STRICT = ConfigDict(strict=True)


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["text"]
    text: Text


class FunctionCall(BaseModel):
    """The function an assistant's tool call invokes (``arguments``: JSON text)."""

    model_config = ConfigDict(extra="allow")

    name: str
    arguments: str


class ToolCall(BaseModel):
    """One tool call of an assistant message, as OpenAI shapes it (other kinds' fields kept)."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: str = "function"
    function: FunctionCall | None = None


class ChatMessage(BaseModel):
    """One turn. List-of-parts content (text only) is accepted and joined.

    Assistant turns keep their ``tool_calls``, tool turns their ``tool_call_id``; any other
    field a client sends is kept too and reaches OpenAI-compatible upstreams as it is.
    """

    model_config = ConfigDict(extra="allow", strict=True)
    __pydantic_extra__: dict[str, Json] = Field(init=False)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | None = None
    name: Text | None = None
    tool_calls: list[Annotated[ToolCall, AfterValidator(valid_json)]] | None = None
    tool_call_id: Text | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _join_parts(cls, value: Any) -> Any:
        if isinstance(value, list):
            texts = []
            for i, part in enumerate(value):
                text = part.get("text") if isinstance(part, dict) else None
                error = _surrogate_error(text, f"part {i}") if isinstance(text, str) else None
                if error is not None:
                    raise error
                texts.append(TextPart.model_validate(part).text)
            return "".join(texts)
        return value

    @property
    def has_text(self) -> bool:
        """Whether the content holds more than white space (:data:`TEXT_CHAR`)."""
        return bool(self.content and _TEXT_CHAR.search(self.content))


#: A character that is white space neither to Python (``str.isspace``: also U+001C-U+001F and
#: U+0085) nor to the ECMAScript regexes of JSON Schema (``\s``: also U+FEFF), written so that
#: both read it alike: the served schema's ``pattern`` and the server's check agree on every
#: string ("\x85\x85" is no question to either).
TEXT_CHAR = (
    "[^\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"
)
_TEXT_CHAR = re.compile(TEXT_CHAR)


#: A user message with more than white space: the question (schema of ``messages``' ``contains``).
USER_TEXT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"const": "user"},
        "content": {
            "anyOf": [
                {"type": "string", "pattern": TEXT_CHAR},
                {
                    "type": "array",
                    "contains": {
                        "type": "object",
                        "required": ["text"],
                        "properties": {"text": {"type": "string", "pattern": TEXT_CHAR}},
                    },
                },
            ]
        },
    },
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)

    include_usage: bool = False


class ResponseFormat(BaseModel):
    """``{"type": "text" | "json_object" | "json_schema", "json_schema": {...}}``."""

    model_config = ConfigDict(extra="allow", strict=True)
    __pydantic_extra__: dict[str, Json] = Field(init=False)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Json] | None = None


def _stop_schema(schema: dict[str, Any]) -> None:
    for branch in schema.get("anyOf", []):
        if branch.get("type") == "array":
            branch["maxItems"] = 4


def _stop_sequences(value: str | list[str] | None) -> str | list[str] | None:
    """The ``stop`` field's check: at most 4 sequences, each valid JSON text."""
    if isinstance(value, list) and len(value) > 4:
        raise ValueError("at most 4 stop sequences")
    valid_json(value)
    return value


def _listed(stop: str | list[str] | None) -> list[str]:
    """A ``stop`` field's sequences as a list."""
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _texts_schema(*, exactly_one: bool) -> Callable[[dict[str, Any]], None]:
    """The JSON-schema hook of a ``str | list[str]`` field: no empty string, a list of at
    least one text (``exactly_one``: of exactly one non-empty text)."""

    def hook(schema: dict[str, Any]) -> None:
        for branch in schema.get("anyOf", []):
            if branch.get("type") == "string":
                branch["minLength"] = 1
            elif branch.get("type") == "array":
                branch["minItems"] = 1
                if exactly_one:
                    branch["maxItems"] = 1
                    branch.setdefault("items", {})["minLength"] = 1

    return hook


#: The OpenAI parameters that reach a provider in ``GenerationParams.options`` (sampling
#: parameters lexrag reads itself travel in ``GenerationParams``' own fields).
OPTION_FIELDS = (
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    "metadata",
    "store",
    "service_tier",
    "max_completion_tokens",
)


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat request, plus lexrag's extras (``rag``, ``top_k``, ``fallback``).

    Every OpenAI parameter is kept, unknown ones too, and passed to OpenAI-compatible
    upstreams as it came (:attr:`options`); a provider that cannot honour one that changes
    the answer's shape (``tools``, ``response_format``, ``logprobs``) makes it a 400.
    """

    model_config = ConfigDict(extra="allow", strict=True)
    __pydantic_extra__: dict[str, Json] = Field(init=False)

    model: Text | None = None
    messages: list[ChatMessage] = Field(
        min_length=1,
        description="The conversation; at least one user message with text (the question).",
        json_schema_extra={"contains": USER_TEXT_SCHEMA},
    )
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(default=None, json_schema_extra=_stop_schema)
    seed: int | None = None
    n: int = Field(
        default=1,
        ge=1,
        description="Choices to return: lexrag returns one.",
        json_schema_extra={"maximum": 1},
    )
    tools: list[dict[str, Json]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Json] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    user: Text | None = None
    metadata: dict[str, Text] | None = None
    store: bool | None = None
    service_tier: Text | None = None
    # lexrag extras
    rag: bool | None = None
    top_k: int | None = Field(default=None, ge=1, le=100)
    fallback: list[Text] | None = None
    filters: RetrievalFilters | None = Field(
        default=None,
        description="lexrag's extra: which documents retrieval may use (in_force, as_of, status, "
        "kind, doc); unset fields take [retrieval] filters. By default documents no longer in "
        "force are left out.",
    )

    _integral = field_validator(
        "max_tokens", "max_completion_tokens", "seed", "n", "top_logprobs", "top_k", mode="before"
    )(integral)

    _stop = field_validator("stop")(_stop_sequences)

    @property
    def stop_list(self) -> list[str]:
        return _listed(self.stop)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def options(self) -> dict[str, Any]:
        """The OpenAI parameters a provider gets as they came (``GenerationParams.options``):
        the ones in :data:`OPTION_FIELDS` the client set, and every unknown one."""
        out: dict[str, Any] = {}
        for name in OPTION_FIELDS:
            value = getattr(self, name)
            if name in self.model_fields_set and value is not None:
                out[name] = (
                    value.model_dump(mode="json", exclude_unset=True)
                    if isinstance(value, BaseModel)
                    else value
                )
        out.update(self.model_extra or {})
        return out


# --- responses ------------------------------------------------------------------------


class Usage(BaseModel):
    """Token counts. ``estimated`` (lexrag's extra, present only when true) says they were
    estimated without the model's tokenizer; an upstream's details (``prompt_tokens_details``,
    ``completion_tokens_details``, …) are kept as it sent them."""

    model_config = ConfigDict(extra="allow")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = Field(
        default=False,
        exclude_if=lambda v: not v,
        description="lexrag's extra, present only when true: the counts are an estimate "
        "(no tokenizer for this model), not the model's token counts.",
    )

    @classmethod
    def of(cls, prompt: int, completion: int, *, estimated: bool = False) -> Usage:
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            estimated=estimated,
        )


# --- document metadata and retrieval filters ---------------------------------------------

#: A document's legal status (tình trạng hiệu lực), as ASCII slugs of the Vietnamese terms.
DocumentStatus = Literal["con-hieu-luc", "het-hieu-luc", "chua-co-hieu-luc", "het-hieu-luc-mot-phan"]
STATUS_LABELS: dict[str, str] = {
    "con-hieu-luc": "Còn hiệu lực",
    "het-hieu-luc": "Hết hiệu lực",
    "chua-co-hieu-luc": "Chưa có hiệu lực",
    "het-hieu-luc-mot-phan": "Hết hiệu lực một phần",
}
_STATUS_ALIASES = {"mot-phan": "het-hieu-luc-mot-phan", "con-hieu-luc-mot-phan": "het-hieu-luc-mot-phan"}


def compare_key(text: str) -> str:
    """Lower case without diacritics (đ as d): how kinds, statuses and titles are compared."""
    decomposed = unicodedata.normalize("NFD", text.strip().lower()).replace("đ", "d")
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def parse_status(value: Any) -> Any:
    """``"Còn hiệu lực"``, ``"con_hieu_luc"``, ``"CON HIEU LUC"`` … as a :data:`DocumentStatus`
    slug (a ``mode="before"`` validator: anything else is left for the Literal to refuse)."""
    if not isinstance(value, str):
        return value
    slug = re.sub(r"[\s_]+", "-", compare_key(value))
    return _STATUS_ALIASES.get(slug, slug)


def parse_day(value: Any) -> Any:
    """A date from ``2024-01-01`` or ``01/01/2024`` (a ``mode="before"`` validator); a date
    stays as it is, anything else is an error naming the forms accepted."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
        match = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", text)
        if match:
            day, month, year = (int(g) for g in match.groups())
            try:
                return dt.date(year, month, day)
            except ValueError:
                pass
    raise PydanticCustomError(
        "invalid_date",
        "{value} is not a date: write YYYY-MM-DD (2024-01-01) or DD/MM/YYYY",
        {"value": repr(value)},
    )


def _list_of(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Day = Annotated[dt.date, BeforeValidator(parse_day)]
Status = Annotated[DocumentStatus, BeforeValidator(parse_status)]


class DocumentMeta(BaseModel):
    """What is known of a document as a legal text: from its own header
    (:mod:`lexrag.legalmeta`), overridden by a sidecar ``NAME.meta.toml`` or front matter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    so_hieu: str | None = None
    """The document number, e.g. ``45/2019/QH14``."""
    kind: str | None = None
    """Luật, Bộ luật, Nghị định, Thông tư, Nghị quyết, Quyết định…"""
    issuer: str | None = None
    """The issuing body (Quốc hội, Chính phủ, …)."""
    issued: Day | None = None
    effective: Day | None = None
    """Ngày hiệu lực: the first day it is in force."""
    expires: Day | None = None
    """The first day it is no longer in force."""
    status: Status | None = None
    """The status as declared (a snapshot: the dates, where known, decide on a given day)."""
    amends: tuple[str, ...] = ()
    """What it amends (sửa đổi, bổ sung): số hiệu, document ids or titles."""
    replaces: tuple[str, ...] = ()
    """What it replaces (… hết hiệu lực kể từ ngày Luật này có hiệu lực): those documents
    count as expired from this one's ``effective`` day."""

    _list = field_validator("amends", "replaces", mode="before")(_list_of)

    @property
    def empty(self) -> bool:
        return self == DocumentMeta()


class Amendment(BaseModel):
    """A provision of another document that amends the cited article."""

    doc: str
    title: str
    so_hieu: str | None = None
    article: int | None = None
    citation: str
    text: str
    """The amending provision (the item of the amending article that names the cited one)."""
    status: DocumentStatus | None = None
    """The amending document's status on the day asked about (``chua-co-hieu-luc``: the
    change is not in force yet)."""


class RetrievalFilters(BaseModel):
    """Which documents retrieval may use (``"filters"`` of a chat request, ``[retrieval]
    filters``, ``--in-force``/``--as-of``/``--kind``/``--doc``).

    By default a document known to be no longer in force today is left out. ``as_of`` or
    ``in_force: true`` keep only documents in force on that day (today); a document with
    neither dates nor status counts as in force. ``in_force: false`` uses every document;
    ``status`` keeps only the documents with those statuses on that day."""

    model_config = ConfigDict(extra="forbid")

    in_force: bool | None = Field(default=None, strict=True)
    as_of: Day | None = None
    status: list[Status] | None = None
    kind: list[str] | None = None
    """Kinds of document (Luật, Nghị định, …), compared without case or diacritics."""
    doc: list[str] | None = None
    """Document ids or số hiệu."""

    # One value stands for a list of one (the served schema says so too).
    _statuses = field_validator("status", mode="before", json_schema_input_type=Status | list[Status] | None)(
        _list_of
    )
    _lists = field_validator("kind", "doc", mode="before", json_schema_input_type=str | list[str] | None)(
        _list_of
    )

    def merged(self, over: RetrievalFilters | None) -> RetrievalFilters:
        """These filters with the fields ``over`` sets replacing them."""
        if over is None:
            return self
        return self.model_copy(update=over.model_dump(exclude_unset=True))


class Source(BaseModel):
    """A retrieved passage cited by the answer as ``[index]``."""

    index: int
    doc: str
    title: str
    article: int | None = None
    article_title: str | None = None
    clauses: list[int] = Field(default_factory=list)
    citation: str
    score: float
    text: str
    meta: DocumentMeta | None = Field(default=None, exclude_if=lambda v: v is None)
    """The document's metadata (số hiệu, kind, issuer, dates, declared status), when known."""
    status: DocumentStatus | None = Field(default=None, exclude_if=lambda v: v is None)
    """The document's status on the day retrieval asked about (today unless ``as_of``)."""
    amended_by: list[Amendment] = Field(default_factory=list, exclude_if=lambda v: not v)
    """Provisions of other documents that amend this article."""


#: OpenAI's finish reasons. A stream cut by a failure ends with an error event instead
#: (see :mod:`lexrag.server.sse`), never with a finish reason of its own.
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


def _none(value: Any) -> bool:
    return value is None


class TopLogprob(BaseModel):
    model_config = ConfigDict(extra="allow")

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(BaseModel):
    model_config = ConfigDict(extra="allow")

    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    """A choice's log probabilities, as an OpenAI-compatible upstream sent them."""

    model_config = ConfigDict(extra="allow")

    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class AssistantMessage(BaseModel):
    """The answer. ``tool_calls`` appear only when the model called tools; any other field
    an OpenAI-compatible upstream sent (``annotations``, ``audio``, …) is kept."""

    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, exclude_if=_none)


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason | None = "stop"
    logprobs: ChoiceLogprobs | None = None


_ChoiceT = TypeVar("_ChoiceT", bound=BaseModel)


class _CompletionFields(BaseModel, Generic[_ChoiceT]):
    """The fields of a chat completion and of a chunk of one, in OpenAI's order; each
    narrows ``id``, ``object`` and ``choices``."""

    id: str
    object: str
    created: int = Field(default_factory=now)
    model: str
    choices: list[_ChoiceT]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = Field(default=None, exclude_if=_none)
    sources: list[Source] | None = None
    notice: str | None = Field(default=None, exclude_if=_none)
    """lexrag's extra: what the answer could not use, e.g. that only documents no longer in
    force matched the question."""


class ChatCompletion(_CompletionFields[Choice]):
    id: str = Field(default_factory=new_id)
    object: Literal["chat.completion"] = "chat.completion"

    @classmethod
    def of_text(
        cls, model: str, text: str, finish_reason: FinishReason, usage: Usage | None = None
    ) -> ChatCompletion:
        return cls(
            model=model,
            choices=[Choice(message=AssistantMessage(content=text), finish_reason=finish_reason)],
            usage=usage,
        )

    @property
    def text(self) -> str:
        return self.choices[0].message.content or ""


class FunctionCallDelta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """A piece of a streamed tool call: ``index`` says which call it extends."""

    model_config = ConfigDict(extra="allow")

    index: int
    id: str | None = None
    type: str | None = None
    function: FunctionCallDelta | None = None


class Delta(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = Field(default=None, exclude_if=_none)


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(_CompletionFields[ChunkChoice]):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"


class ChunkFactory:
    """Builds the chunks of one stream with a shared id, model and timestamp."""

    def __init__(self, model: str, id: str | None = None) -> None:
        self.id = id or new_id()
        self.model = model
        self.created = now()

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    def role(self) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(delta=Delta(role="assistant", content=""))])

    def text(self, text: str) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(delta=Delta(content=text))])

    def delta(self, delta: Delta, logprobs: ChoiceLogprobs | None = None) -> ChatCompletionChunk:
        """A chunk with any delta: tool-call pieces, a refusal, text with its log probabilities."""
        return self._chunk([ChunkChoice(delta=delta, logprobs=logprobs)])

    def finish(self, reason: FinishReason) -> ChatCompletionChunk:
        return self._chunk([ChunkChoice(delta=Delta(), finish_reason=reason)])

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        return self._chunk([], usage=usage)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "lexrag"
    state: Literal["closed", "open", "half_open", "unavailable"] | None = None
    """lexrag's extra: the serving provider's circuit breaker (``open``: cooling down, skipped),
    or ``unavailable``: the provider could not be built (``reason`` says why)."""
    reason: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --- embeddings -----------------------------------------------------------------------


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    input: str | list[str] = Field(
        description="A text, or a list of at least one text, to embed.",
        json_schema_extra=_texts_schema(exactly_one=False),
    )
    model: Text | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        default=None,
        ge=1,
        description="Length of the vectors; only embedders trained for it (Matryoshka) can "
        "shorten theirs, others answer 400.",
    )
    user: Text | None = None

    _integral = field_validator("dimensions", mode="before")(integral)

    @field_validator("input")
    @classmethod
    def _some_text(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str) and not value:
            raise PydanticCustomError("too_short", "needs a text to embed, not an empty string")
        if isinstance(value, list) and not value:
            raise PydanticCustomError("too_short", "needs at least one text to embed, not an empty list")
        valid_json(value)
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# --- the seed's llm-service API -------------------------------------------------------


class GenerateRequest(BaseModel):
    """``POST /v1/generate`` of the seed's llm-service."""

    model_config = ConfigDict(strict=True)

    prompt: Text = Field(min_length=1)
    max_tokens: int = Field(
        default=256,
        ge=1,
        description="Completion tokens at most; the served schema's maximum is the server's "
        "[server] max_tokens, and the default is lowered to it when it is smaller.",
    )
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    do_sample: bool = True
    raw: bool = Field(
        default=False,
        description="lexrag's extra. true: the prompt is already rendered (the model's chat "
        "template applied, its special tokens written) and goes to the model as it is. false "
        "(the seed's behaviour): the prompt is the user's message, which the provider renders "
        "with the model's chat template.",
    )

    _integral = field_validator("max_tokens", mode="before")(integral)


class GenerateResponse(BaseModel):
    generated_text: str
    model: str
    finish_reason: FinishReason
    usage: Usage


# --- OpenAI's (legacy) completions: a raw prompt ----------------------------------------


class CompletionRequest(BaseModel):
    """``POST /v1/completions``: a raw prompt the model continues as it is (no chat template,
    no retrieval), as vLLM and llama.cpp serve it; what the ``local`` provider sends an
    llm-service with ``api = "completions"``. The sampling parameters are honoured; OpenAI's
    other parameters are accepted and ignored, except those that would change the answer's
    shape (``n`` or ``best_of`` above 1, ``echo``, ``logprobs``, ``suffix``): a 400."""

    model_config = ConfigDict(extra="allow", strict=True)
    __pydantic_extra__: dict[str, Json] = Field(init=False)

    model: Text | None = None
    prompt: Text | list[Text] = Field(
        description="The prompt: a string, or a list of exactly one string.",
        json_schema_extra=_texts_schema(exactly_one=True),
    )
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(default=None, json_schema_extra=_stop_schema)
    seed: int | None = None
    n: int = Field(
        default=1, ge=1, description="Completions to return: one.", json_schema_extra={"maximum": 1}
    )
    best_of: int | None = Field(default=None, ge=1, json_schema_extra={"maximum": 1})
    echo: Literal[False] = Field(default=False, description="The prompt is never echoed.")
    logprobs: None = Field(default=None, description="Log probabilities are not returned.")
    suffix: None = Field(default=None, description="No text is inserted before a suffix.")

    _integral = field_validator("max_tokens", "seed", "n", "best_of", mode="before")(integral)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if len(texts) != 1:
            raise PydanticCustomError(
                "one_prompt", "lexrag continues one prompt per request: send a string or a list of one"
            )
        if not texts[0]:
            raise PydanticCustomError("too_short", "needs a prompt to continue, not an empty string")
        return value

    _stop = field_validator("stop")(_stop_sequences)

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def stop_list(self) -> list[str]:
        return _listed(self.stop)


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None = None
    logprobs: Any | None = None


class Completion(BaseModel):
    """A ``text_completion``: the whole answer, or (streamed) one piece of it, the last
    with ``finish_reason``; with ``stream_options.include_usage`` a last one with
    ``usage`` and no choices."""

    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


__all__ = [
    "OPTION_FIELDS",
    "STATUS_LABELS",
    "USER_TEXT_SCHEMA",
    "Amendment",
    "AssistantMessage",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChoiceLogprobs",
    "ChunkChoice",
    "ChunkFactory",
    "Completion",
    "CompletionChoice",
    "CompletionRequest",
    "Day",
    "Delta",
    "DocumentMeta",
    "DocumentStatus",
    "Embedding",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingUsage",
    "ErrorDetail",
    "ErrorResponse",
    "FinishReason",
    "FunctionCall",
    "FunctionCallDelta",
    "GenerateRequest",
    "GenerateResponse",
    "Json",
    "ModelCard",
    "ModelList",
    "ResponseFormat",
    "RetrievalFilters",
    "Source",
    "StreamOptions",
    "Text",
    "TokenLogprob",
    "ToolCall",
    "ToolCallDelta",
    "TopLogprob",
    "Usage",
    "compare_key",
    "new_id",
    "parse_day",
    "parse_status",
    "valid_json",
    "valid_text",
]
