"""``lexrag ingest`` on bad input: --prune asks before deleting (or refuses without --yes when
nobody can answer), and symlinks leading outside the ingested folder are skipped with a reason
unless --follow-symlinks. Through the real command line, the terminal through a pty."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lexrag.retrieval import Embedder
from lexrag.store import Store

from .conftest import _ENV_VARS


def _doc(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.txt"
    path.write_text(
        f"Luật thử nghiệm {name}\n\nĐiều 1. Phạm vi điều chỉnh\nLuật này quy định về {name}.\n\n"
        f"Điều 2. Đối tượng áp dụng\nLuật này áp dụng cho {name}.\n",
        encoding="utf-8",
    )
    return path


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _ENV_VARS}


def _ingest(*args: str) -> subprocess.CompletedProcess[str]:
    """``lexrag ingest ARGS`` with stdin not a terminal (as in a script or CI)."""
    return subprocess.run(
        [sys.executable, "-m", "lexrag", "ingest", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )


def _ids(index: Path) -> set[str]:
    store = Store.open(index)
    try:
        return {record.id for record in store.documents()}
    finally:
        store.close()


@pytest.fixture
def indexed(tmp_path: Path, exported_minilm: Embedder) -> tuple[Path, Path]:
    """A folder of documents a, b, c, all ingested; then c is gone and d is new."""
    docs, index = tmp_path / "docs", tmp_path / "index"
    for name in ("a", "b", "c"):
        _doc(docs, name)
    first = _ingest(str(docs), "--index", str(index))
    assert first.returncode == 0, first.stderr
    (docs / "c.txt").unlink()
    _doc(docs, "d")
    return docs, index


# --- --prune -----------------------------------------------------------------------------


def test_prune_refuses_without_yes_when_stdin_is_not_a_terminal(indexed: tuple[Path, Path]) -> None:
    docs, index = indexed
    result = _ingest(str(docs), "--prune", "--index", str(index))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error:") and "1 document " in lines[0] and "--yes" in lines[0]
    # Checked before anything happens: nothing deleted, nothing ingested.
    assert _ids(index) == {"a", "b", "c"}


def test_prune_with_yes_deletes_without_asking(indexed: tuple[Path, Path]) -> None:
    docs, index = indexed
    result = _ingest(str(docs), "--prune", "--yes", "--index", str(index))
    assert result.returncode == 0, result.stderr
    assert "1 added, 0 updated, 2 skipped (unchanged), 1 deleted" in result.stdout
    assert _ids(index) == {"a", "b", "d"}


def test_prune_with_nothing_to_delete_needs_no_yes(indexed: tuple[Path, Path]) -> None:
    docs, index = indexed
    _doc(docs, "c")
    result = _ingest(str(docs), "--prune", "--index", str(index))
    assert result.returncode == 0, result.stderr
    assert _ids(index) == {"a", "b", "c", "d"}


class Terminal:
    """A command on a pseudo-terminal: its output as it comes, keys typed into it."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        env = dict(_env(), COLUMNS="150", LINES="50", TERM="xterm")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lexrag", *args], stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        self.output = ""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the command exited and closed the terminal
            return False
        if not data:
            return False
        self.output += data.decode("utf-8", "replace").replace("\r\n", "\n")
        return True

    def wait_for(self, needle: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(f"{needle!r} did not appear on the terminal:\n{self.output}")
        return self.output

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def finish(self, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.2):
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                break
        code = self.proc.wait(max(1.0, deadline - time.monotonic()))
        os.close(self.master)
        return code


def test_prune_on_a_terminal_lists_what_goes_and_asks(tmp_path: Path, exported_minilm: Embedder) -> None:
    docs, index = tmp_path / "docs", tmp_path / "index"
    names = [f"doc-{i:02d}" for i in range(24)]
    for name in names:
        _doc(docs, name)
    first = _ingest(str(docs), "--index", str(index))
    assert first.returncode == 0, first.stderr
    kept = docs / "kept"
    kept.mkdir()
    (docs / "doc-00.txt").rename(kept / "doc-00.txt")

    # Declined: nothing is deleted (or ingested).
    term = Terminal("ingest", str(kept), "--prune", "--index", str(index))
    screen = term.wait_for("Delete them? [y/N]")
    assert "--prune will delete 23 documents" in screen
    listed = [name for name in names if f"  {name}\n" in screen]
    assert listed == names[1:21] and "… and 3 more" in screen
    term.type("n\n")
    assert term.finish() != 0
    assert "nothing was ingested or deleted" in term.output
    assert _ids(index) == set(names)

    # Agreed: the 23 go, the one under the path stays.
    term = Terminal("ingest", str(kept), "--prune", "--index", str(index))
    term.wait_for("Delete them? [y/N]")
    term.type("y\n")
    assert term.finish() == 0, term.output
    assert "23 deleted" in term.output
    assert _ids(index) == {"doc-00"}


# --- symlinks ----------------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path: Path) -> tuple[Path, Path]:
    """docs/ with a file, a subfolder, symlinks inside it, symlinks leading out of it, and
    cycles both ways; outside/ with what the outward links reach."""
    docs, outside = tmp_path / "docs", tmp_path / "outside"
    _doc(docs, "a")
    _doc(docs / "sub", "b")
    _doc(outside, "ext")
    _doc(outside / "dir", "far")
    (docs / "ext.txt").symlink_to(outside / "ext.txt")  # a file outside
    (docs / "extdir").symlink_to(outside / "dir", target_is_directory=True)  # a folder outside
    (docs / "alias").symlink_to(docs / "sub", target_is_directory=True)  # inside: fine
    (docs / "sub" / "loop").symlink_to(docs, target_is_directory=True)  # a cycle inside
    (docs / "up").symlink_to(tmp_path, target_is_directory=True)  # out, and a cycle through docs
    (docs / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")
    return docs, outside


def test_scan_skips_links_leading_outside_unless_told(linked: tuple[Path, Path]) -> None:
    from lexrag.ingest import scan

    docs, _ = linked
    found = scan([docs])
    assert sorted(p.stem for p in found.files) == ["a", "b"]
    assert sorted(Path(p).name for p in found.ignored) == ["ext.txt", "extdir", "up"]
    assert all("--follow-symlinks" in why for why in found.ignored.values())
    assert not found.problems

    followed = scan([docs], follow_symlinks=True)
    assert sorted(p.stem for p in followed.files) == ["a", "b", "ext", "far"]
    assert not followed.ignored and not followed.problems


def test_ingest_cli_reports_skipped_links_and_follows_them_when_told(
    linked: tuple[Path, Path], tmp_path: Path, exported_minilm: Embedder
) -> None:
    docs, _ = linked
    index = tmp_path / "index"
    result = _ingest(str(docs), "--index", str(index))
    assert result.returncode == 0, result.stderr
    for link in ("ext.txt", "extdir", "up"):
        line = f"skipped {docs / link}: links outside {docs} (pass --follow-symlinks to ingest it)"
        assert line in result.stderr.splitlines(), result.stderr
    assert "2 added" in result.stdout and "3 symlinks not followed" in result.stdout
    assert _ids(index) == {"a", "b"}

    again = _ingest(str(docs), "--follow-symlinks", "--index", str(index))
    assert again.returncode == 0, again.stderr
    assert "skipped" not in again.stderr
    assert _ids(index) == {"a", "b", "ext", "far"}
