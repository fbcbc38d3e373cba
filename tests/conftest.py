"""Shared fixtures: an isolated corpus cache, a small corpus and one tiny trained run."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_CONFIG, run_cli


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["CHARRNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    # The tests' models are tiny: one thread runs them faster than two, here and in every subprocess.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 20 KB of real text: the standard library's own textwrap.py, on every machine."""
    path = tmp_path_factory.mktemp("corpus") / "textwrap.txt"
    path.write_text(Path(textwrap.__file__).read_text(encoding="utf-8"), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path) -> Path:
    """A run dir trained with configs/tiny.toml through the CLI (shared by the read-only tests)."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    run_cli("train", corpus_file, "--run-dir", run_dir, "--config", TINY_CONFIG,
            "--device", "cpu")
    return run_dir
