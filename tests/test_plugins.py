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
from lexrag.errors import PluginError
from lexrag.plugins import Registry, make_plugin_manager
from lexrag.providers import Provider

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
            register("extractive", Provider)

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
            register("extra", Provider)

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
