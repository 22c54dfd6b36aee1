from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

from lexrag import hookimpl
from lexrag.config import load_config
from lexrag.default_plugins.extractive import ExtractiveProvider
from lexrag.errors import ConfigError
from lexrag.registry import Registry, check_config, effective_settings, plugin_settings


def write(tmp: Path, text: str, name: str = "lexrag.toml") -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


class SecretSettings(BaseModel):
    api_key: SecretStr | None = None
    model: str = "m"


@pytest.fixture
def registry_with_secret(pm):
    class SecretPlugin:
        @hookimpl
        def register_llm_providers(self, register):
            cls = type("SecretProvider", (ExtractiveProvider,), {"Settings": SecretSettings})
            register("secretive", cls)

    pm.register(SecretPlugin())
    return Registry(pm)


def test_defaults_without_any_file(registry):
    config = check_config(load_config(env={}), registry)
    assert config.path is None
    assert config.settings.llm.provider == "extractive"
    assert config.origin("llm.provider") == "default"


def test_precedence_default_file_env_cli(clean_env, registry):
    write(clean_env, '[index]\ndir = "from-file"\n[retrieval]\ntop_k = 7\n')
    config = load_config(env={})
    assert str(config.settings.index.dir) == "from-file"
    assert config.origin("index.dir").startswith("file:")
    assert config.settings.retrieval.top_k == 7

    config = load_config(env={"LEXRAG_INDEX_DIR": "from-env"})
    assert str(config.settings.index.dir) == "from-env"
    assert config.origin("index.dir") == "env:LEXRAG_INDEX_DIR"
    assert config.settings.retrieval.top_k == 7  # the file still sets what env does not

    config = load_config(env={"LEXRAG_INDEX_DIR": "from-env"}, overrides={"index.dir": "from-cli"})
    assert str(config.settings.index.dir) == "from-cli"
    assert config.origin("index.dir") == "cli"
    assert config.origin("server.port") == "default"


def test_config_file_search_order(clean_env):
    write(clean_env, "[retrieval]\ntop_k = 2\n")
    other = write(clean_env, "[retrieval]\ntop_k = 3\n", name="other.toml")
    explicit = write(clean_env, "[retrieval]\ntop_k = 4\n", name="explicit.toml")
    assert load_config(env={}).settings.retrieval.top_k == 2
    assert load_config(env={"LEXRAG_CONFIG": str(other)}).settings.retrieval.top_k == 3
    assert load_config(explicit, env={"LEXRAG_CONFIG": str(other)}).settings.retrieval.top_k == 4


def test_seed_env_vars(registry):
    env = {
        "LLM_PROVIDER": "extractive",
        "LOCAL_LLM_API_URL": "http://llm-service:8000",
        "OPENAI_API_KEY": "sk-test-123",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "LEXRAG_API_KEYS": "k1, k2",
    }
    config = load_config(env=env)
    assert config.settings.providers["local"]["url"] == "http://llm-service:8000"
    assert config.settings.providers["openai"]["api_key"] == "sk-test-123"
    assert [k.get_secret_value() for k in config.settings.server.api_keys] == ["k1", "k2"]
    assert config.origin("llm.provider") == "env:LLM_PROVIDER"


def test_plugin_table_validated_against_its_settings(clean_env, registry):
    write(clean_env, "[providers.extractive]\nmax_passages = 3\n")
    config = check_config(load_config(env={}), registry)
    settings = plugin_settings(config, registry, "providers", "extractive")
    assert settings.max_passages == 3


ERROR_CASES = [
    ("[llm\nprovider = 1", r"lexrag.toml: not valid TOML: .*line 1"),
    ("[nonsense]\na = 1", r"lexrag.toml: \[nonsense\]: unknown table \(valid: .*llm.*\)"),
    ("[server]\nprot = 80", r"lexrag.toml: \[server\] prot: unknown key \(valid: .*port.*\)"),
    ('[server]\nport = "eighty"', r"lexrag.toml: \[server\] port = 'eighty': .*integer"),
    ("[server]\nport = 99999", r"lexrag.toml: \[server\] port = 99999: .*less than or equal to 65535"),
    ('llm = "x"', r"lexrag.toml: llm = 'x': must be a table"),
    (
        '[llm]\nprovider = "gpt"',
        r"lexrag.toml: \[llm\] provider = 'gpt': no provider named 'gpt' is installed",
    ),
    (
        '[llm]\nfallback = ["extractive", "nope"]',
        r"\[llm\] fallback = .*entry 1 names no installed provider 'nope'",
    ),
    ("[providers.nope]\nx = 1", r"lexrag.toml: \[providers.nope\]: no provider named 'nope' is installed"),
    (
        "[providers.extractive]\nmax_pasages = 3",
        r"\[providers.extractive\] max_pasages: unknown key \(valid keys: max_passages, max_quote_chars\)",
    ),
    (
        "[providers.extractive]\nmax_passages = 0",
        r"\[providers.extractive\] max_passages = 0: Input should be greater than or equal to 1",
    ),
]


@pytest.mark.parametrize(("text", "pattern"), ERROR_CASES)
def test_config_errors_name_file_table_key_value(clean_env, registry, text, pattern):
    write(clean_env, text)
    with pytest.raises(ConfigError, match=pattern) as info:
        check_config(load_config(env={}), registry)
    assert "\n" not in str(info.value)


def test_env_error_names_the_variable(registry):
    with pytest.raises(
        ConfigError, match=r"^LLM_PROVIDER='gpt-9' \(sets \[llm\] provider\): no provider named"
    ):
        check_config(load_config(env={"LLM_PROVIDER": "gpt-9"}), registry)


def test_missing_config_files(clean_env):
    with pytest.raises(ConfigError, match=r"--config nope.toml: no such file"):
        load_config("nope.toml", env={})
    with pytest.raises(ConfigError, match=r"LEXRAG_CONFIG=gone.toml: no such file"):
        load_config(env={"LEXRAG_CONFIG": "gone.toml"})


def test_env_only_table_for_missing_plugin_is_ignored(pm):
    # OPENAI_API_KEY set in the shell must not break a setup without the openai plugin.
    pm.unregister(name="openai")
    registry = Registry(pm)
    check_config(load_config(env={"OPENAI_API_KEY": "sk-x"}), registry)


def test_secrets_are_masked(registry_with_secret, clean_env):
    write(
        clean_env, '[providers.secretive]\napi_key = "sk-file-secret"\n[server]\napi_keys = ["srv-secret"]\n'
    )
    config = check_config(load_config(env={"OPENAI_API_KEY": "sk-env-secret"}), registry_with_secret)
    rows = {key: (value, src) for key, value, src in effective_settings(config, registry_with_secret)}
    assert rows["providers.secretive.api_key"][0] == "********"
    assert rows["server.api_keys"][0] == ["********"]
    assert "sk-" not in repr(rows) and "srv-secret" not in repr(rows)


@pytest.mark.parametrize(
    ("toml", "env", "needle"),
    [
        ("[server]\nprot = 1\n", {}, "[server] prot: unknown key"),
        ("", {"LLM_PROVIDER": "nope"}, "LLM_PROVIDER='nope'"),
        ("[[", {}, "not valid TOML"),
    ],
)
def test_cli_config_errors_are_one_line(cli, clean_env, toml, env, needle):
    write(clean_env, toml)
    result = cli("config", "show", env=env, cwd=clean_env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and needle in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_config_show_sources_and_masking(cli, clean_env):
    write(clean_env, '[retrieval]\ntop_k = 9\n[server]\napi_keys = ["srv-secret-1"]\n')
    result = cli(
        "config",
        "show",
        "--json",
        env={"OPENAI_API_KEY": "sk-live-abc", "LLM_PROVIDER": "extractive"},
        cwd=clean_env,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["settings"]
    assert data["retrieval.top_k"] == {"value": 9, "source": f"file:{Path('lexrag.toml')}"}
    assert data["llm.provider"]["source"] == "env:LLM_PROVIDER"
    assert data["server.port"]["source"] == "default"
    assert "sk-live-abc" not in result.stdout and "srv-secret-1" not in result.stdout
    assert data["server.api_keys"]["value"] == ["********"]
    table = cli("config", "show", env={"OPENAI_API_KEY": "sk-live-abc"}, cwd=clean_env)
    assert table.returncode == 0 and "sk-live-abc" not in table.stdout


def test_cli_version(cli):
    result = cli("--version")
    assert result.returncode == 0 and "lexrag, version 0.1.0" in result.stdout


def test_the_shipped_example_config_is_valid(registry):
    from .conftest import ROOT

    config = check_config(load_config(ROOT / "lexrag.toml.example", env={}), registry)
    assert config.settings.llm.fallback == ["extractive"]
    for table in ("providers", "embedders"):
        for name in getattr(config.settings, table):
            plugin_settings(config, registry, table, name)
