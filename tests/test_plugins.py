from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from lexrag import hookimpl
from lexrag.default_plugins.extractive import ExtractiveProvider
from lexrag.errors import PluginError
from lexrag.plugins import make_plugin_manager
from lexrag.providers import Provider
from lexrag.registry import Registry

from .conftest import ROOT, run_cli


def test_entry_points_discover_the_in_tree_plugins(pm):
    names = {name for name, plugin in pm.list_name_plugin() if plugin is not None}
    assert {"openai", "local", "retrievers", "lexrag.default_plugins.extractive"} <= names
    dists = {dist.metadata["name"] for _, dist in pm.list_plugin_distinfo()}
    assert {"lexrag-openai", "lexrag-local", "lexrag-retrievers"} <= dists


def test_default_plugin_registers_through_the_hook(registry):
    assert "extractive" in registry.providers
    assert registry.providers.owners["extractive"] == "lexrag.default_plugins.extractive"


def test_duplicate_names_are_an_error(pm):
    class Clash:
        @hookimpl
        def register_llm_providers(self, register):
            register("extractive", ExtractiveProvider)

    pm.register(Clash(), name="clash")
    with pytest.raises(PluginError, match=r"two plugins register the provider 'extractive'.*clash"):
        Registry(pm)


def test_unknown_name_lists_what_is_installed(registry):
    with pytest.raises(PluginError, match=r"no provider named 'nope'.*installed: .*extractive"):
        registry.providers.get("nope")


def test_fresh_manager_has_no_test_plugins(pm):
    class Extra:
        @hookimpl
        def register_llm_providers(self, register):
            register("extra", ExtractiveProvider)

    pm.register(Extra())
    assert "extra" in Registry(pm).providers
    assert "extra" not in Registry(make_plugin_manager()).providers


def test_plugins_command_lists_plugins_as_json(cli):
    result = cli("plugins")
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert entries["openai"]["distribution"] == "lexrag-openai"
    assert entries["openai"]["version"] == "0.1.0"
    extractive = entries["lexrag.default_plugins.extractive"]
    assert extractive["hooks"] == ["register_llm_providers"]
    assert extractive["registers"] == {"providers": ["extractive"]}


@pytest.fixture
def scratch_env(tmp_path: Path) -> str:
    """A throw-away venv that sees lexrag's site-packages, so installing into it leaves the
    project's environment untouched."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    parent = sysconfig.get_paths()["purelib"]
    # addsitedir, not a bare path: the parent's own .pth files (editable installs) must run too.
    (site / "_lexrag_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return str(venv / "bin" / "python")


@pytest.mark.slow
def test_install_lists_and_uninstalls_a_third_party_plugin(scratch_env):
    echo = ROOT / "tests" / "plugins" / "lexrag-echo"
    env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PATH": os.environ["PATH"]}
    before = run_cli("plugins", python=scratch_env, env=env)
    assert before.returncode == 0, before.stderr
    assert "echo" not in {e["name"] for e in json.loads(before.stdout)}

    installed = run_cli("install", str(echo), python=scratch_env, env=env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    listed = run_cli("plugins", python=scratch_env, env=env)
    entries = {e["name"]: e for e in json.loads(listed.stdout)}
    assert entries["echo"]["distribution"] == "lexrag-echo"
    assert entries["echo"]["version"] == "0.3.1"
    assert entries["echo"]["registers"] == {"providers": ["echo"]}

    removed = run_cli("uninstall", "-y", "lexrag-echo", python=scratch_env, env=env)
    assert removed.returncode == 0, removed.stderr
    after = run_cli("plugins", python=scratch_env, env=env)
    assert "echo" not in {e["name"] for e in json.loads(after.stdout)}


def test_an_unexpected_failure_in_a_command_is_one_line():
    """The CLI's safety net: a bug in a plugin's command is reported in one line, and -vv
    shows the traceback."""
    import click
    from click.testing import CliRunner

    from lexrag.cli import cli

    @click.command("explode")
    def explode() -> None:
        raise RuntimeError("disk\nfull")

    logger = logging.getLogger("lexrag")
    saved = (logger.level, list(logger.handlers))
    cli.add_command(explode)
    try:
        result = CliRunner().invoke(cli, ["explode"])
        assert result.exit_code == 1
        assert result.output == "Error: unexpected RuntimeError: disk full (run with -vv for the traceback)\n"
        verbose = CliRunner().invoke(cli, ["-vv", "explode"])
        assert isinstance(verbose.exception, RuntimeError)
    finally:
        cli.commands.pop("explode")
        logger.setLevel(saved[0])
        logger.handlers[:] = saved[1]


# --- the registration contract -------------------------------------------------------------


class _Abstract(Provider):
    """A provider that forgot to implement ``complete`` and ``stream``."""


class _NoSettingsModel(ExtractiveProvider):
    Settings = dict  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("name", "cls", "pattern"),
    [
        (
            "bad",
            int,
            r"plugin sloppy registers the provider 'bad' as .*int.*not a subclass of lexrag.Provider",
        ),
        (
            "bad",
            _Abstract,
            r"plugin sloppy registers the provider 'bad' as _Abstract, which does not implement complete, stream",
        ),
        ("bad", _NoSettingsModel, r"plugin sloppy .*whose Settings is not a pydantic model"),
        (
            "",
            ExtractiveProvider,
            r"plugin sloppy registers a provider under '': a name must be a non-empty string",
        ),
    ],
)
def test_registration_checks_the_contract(pm, name, cls, pattern):
    class Sloppy:
        @hookimpl
        def register_llm_providers(self, register):
            register(name, cls)

    pm.register(Sloppy(), name="sloppy")
    with pytest.raises(PluginError, match=pattern):
        Registry(pm)


def test_a_hook_that_raises_is_an_error_naming_the_plugin(pm):
    class Faulty:
        @hookimpl
        def register_retrievers(self, register):
            raise KeyError("index")

    pm.register(Faulty(), name="faulty")
    with pytest.raises(PluginError, match=r"^plugin faulty failed in register_retrievers: KeyError: 'index'"):
        Registry(pm)


def test_load_plugins_env_chooses_the_installed_plugins():
    everything = {n for n, _ in make_plugin_manager(env={}).list_name_plugin()}
    assert {"openai", "local", "retrievers"} <= everything
    none = {n for n, _ in make_plugin_manager(env={"LEXRAG_LOAD_PLUGINS": ""}).list_name_plugin()}
    assert none == {"lexrag.default_plugins.extractive"}
    only = make_plugin_manager(env={"LEXRAG_LOAD_PLUGINS": " Lexrag_OpenAI , "})
    assert {n for n, _ in only.list_name_plugin()} == {"lexrag.default_plugins.extractive", "openai"}
    assert "openai" in Registry(only).providers and "hybrid" not in Registry(only).retrievers


def test_load_plugins_env_reaches_the_cli(cli):
    result = cli("plugins", env={"LEXRAG_LOAD_PLUGINS": "lexrag-retrievers"})
    assert result.returncode == 0, result.stderr
    assert {e["name"] for e in json.loads(result.stdout)} == {
        "lexrag.default_plugins.extractive",
        "retrievers",
    }


def test_one_plugin_manager_per_command_line_run(monkeypatch, capsys):
    import lexrag.cli

    made = []
    real = lexrag.cli.make_plugin_manager

    def counting(**kw):
        made.append(kw)
        return real(**kw)

    monkeypatch.setattr(lexrag.cli, "make_plugin_manager", counting)
    monkeypatch.setattr("lexrag.cli._app.make_plugin_manager", counting)
    logger = logging.getLogger("lexrag")
    saved = (logger.level, list(logger.handlers))
    try:
        with pytest.raises(SystemExit) as exit_info:
            lexrag.cli.main(["plugins"])
    finally:  # main() sets the CLI's log level; later tests read the lexrag logger
        logger.setLevel(saved[0])
        logger.handlers[:] = saved[1]
    assert exit_info.value.code == 0
    assert "registers" in capsys.readouterr().out
    assert len(made) == 1


@pytest.mark.slow
def test_a_broken_plugin_is_reported_and_can_be_uninstalled(scratch_env):
    """A plugin that fails at import leaves every built-in command working: it is listed
    with its error, warned about on stderr, and `lexrag uninstall` removes it."""
    broken = ROOT / "tests" / "plugins" / "lexrag-broken"
    env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PATH": os.environ["PATH"]}
    installed = run_cli("install", str(broken), python=scratch_env, env=env)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    listed = run_cli("plugins", python=scratch_env, env=env)
    assert listed.returncode == 0, listed.stderr
    entries = {e["name"]: e for e in json.loads(listed.stdout)}
    assert "not-installed-anywhere" in entries["broken"]["error"]
    assert "lexrag uninstall lexrag-broken" in entries["broken"]["error"]
    assert "openai" in entries and "registers" in entries["openai"]
    assert listed.stderr.count("plugin broken (lexrag-broken 0.0.1) failed to load: ImportError") == 1
    assert "Traceback" not in listed.stderr

    shown = run_cli("config", "show", "--json", python=scratch_env, env=env)
    assert shown.returncode == 0, shown.stderr
    skipped = run_cli("plugins", python=scratch_env, env={**env, "LEXRAG_LOAD_PLUGINS": "lexrag-openai"})
    assert skipped.returncode == 0 and skipped.stderr == ""

    removed = run_cli("uninstall", "-y", "lexrag-broken", python=scratch_env, env=env)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    after = run_cli("plugins", python=scratch_env, env=env)
    assert after.returncode == 0 and "broken" not in after.stderr
    assert "broken" not in {e["name"] for e in json.loads(after.stdout)}


@pytest.mark.slow
def test_the_guide_example_plugin_streams_through_lexrag_serve(scratch_env, tmp_path):
    """docs/plugins.md's example, installed as a user would, answers a streamed chat
    through `lexrag serve` and the openai SDK: deltas, then finish_reason, then usage."""
    from openai import OpenAI

    from .conftest import free_port, wait_healthy

    echo = ROOT / "tests" / "plugins" / "lexrag-echo"
    env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PATH": os.environ["PATH"]}
    installed = run_cli("install", str(echo), python=scratch_env, env=env)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    config = tmp_path / "lexrag.toml"
    config.write_text(
        '[llm]\nprovider = "echo"\n[retrieval]\nenabled = false\n[providers.echo]\nprefix = "Echo: "\n'
    )
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [scratch_env, "-m", "lexrag", "--config", str(config), "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith(("LEXRAG", "LLM_", "OPENAI"))},
                **env,
            },
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base, timeout=60, output=log.read_text)
        client = OpenAI(base_url=f"{base}/v1", api_key="unused")
        chunks = list(
            client.chat.completions.create(
                model="echo",
                messages=[{"role": "user", "content": "thời hạn hợp đồng lao động"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Echo: thời hạn hợp đồng lao động"
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes == ["stop"]
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7
        assert all(c.model == "echo" for c in chunks)
        whole = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "một hai ba"}], max_tokens=2
        )
        assert whole.choices[0].message.content == "Echo: một"
        assert whole.choices[0].finish_reason == "length"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
