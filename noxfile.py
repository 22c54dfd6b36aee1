"""Sessions: tests (lint + types + pytest), lint, typecheck, bench, demo.

Run them in the project's .venv (``scripts/setup.sh --dev``) with ``.venv/bin/nox --no-venv``:
the stack is heavy (torch, ONNX Runtime) and is installed once, not per session.
"""

from __future__ import annotations

import sys

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]

PY = sys.executable


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    session.run(PY, "-m", "ruff", "check", ".")
    session.run(PY, "-m", "ruff", "format", "--check", ".")


@nox.session(python=False)
def typecheck(session: nox.Session) -> None:
    session.run(PY, "-m", "mypy", "core/src/lexrag")


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """ruff, mypy --strict on the core, then pytest (exit 5, no tests collected, is a failure)."""
    lint(session)
    typecheck(session)
    session.run(PY, "-m", "pytest", *session.posargs, success_codes=[0])


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Every benchmark under bench/ (each prints ratios against its own baseline)."""
    import pathlib

    for script in sorted(pathlib.Path("bench").glob("bench_*.py")):
        session.run(PY, str(script), *session.posargs)


@nox.session(python=False)
def demo(session: nox.Session) -> None:
    session.run("bash", "scripts/demo.sh", external=True)
