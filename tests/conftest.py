"""Shared fixtures: an isolated corpus cache, small corpora, a CLI runner and one tiny trained run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["CHARRNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 20 KB of real text: the standard library's own textwrap.py, on every machine."""
    path = tmp_path_factory.mktemp("corpus") / "textwrap.txt"
    path.write_text(Path(textwrap.__file__).read_text(encoding="utf-8"), encoding="utf-8")
    return path


def run_cli(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """`python -m charrnn ARGS` in a subprocess, as a user runs it."""
    result = subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], capture_output=True, cwd=ROOT,
                            **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"charrnn {' '.join(map(str, args))} exited {result.returncode}:\n"
                             f"{result.stderr.decode(errors='replace')}")
    return result


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path) -> Path:
    """A run dir trained with configs/tiny.toml through the CLI (shared by the read-only tests)."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    run_cli("train", corpus_file, "--run-dir", run_dir, "--config", ROOT / "configs" / "tiny.toml",
            "--device", "cpu")
    return run_dir
