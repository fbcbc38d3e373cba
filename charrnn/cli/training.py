"""`charrnn train`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from charrnn.cli.group import SIGNAL_EXIT, Duration, FiniteFloat, count, is_utf8, main, note, on_terminal
from charrnn.errors import UserError


def _run_options(f: Callable) -> Callable:
    """The options `charrnn train` and `charrnn plan` share: which corpus, config and device."""
    options = [
        click.option("--config", "config_file", type=click.Path(path_type=Path),
                     help="TOML config file, or a preset by name (shakespeare, shakespeare-10min, tiny, large-gpu). "
                          "Defaults apply to keys it leaves out."),
        click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override one config value, e.g. --set train.lr=3e-3. Repeatable."),
        click.option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N (train.device)."),
        click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16", "auto"]),
                     help="Mixed precision (train.precision): bf16, fp16 (CUDA only), or auto: on a CPU, the faster "
                          "of fp32 and bf16 as a timed trial finds."),
        click.option("--encoding", help="Corpus codec, e.g. latin-1, or 'bytes' for raw bytes (data.encoding)."),
        click.option("--include", multiple=True, metavar="GLOB",
                     help="Directory corpus: use only files whose relative path matches, e.g. '*.py'. Repeatable."),
        click.option("--exclude", multiple=True, metavar="GLOB",
                     help="Directory corpus: leave out files whose relative path matches, e.g. 'tests/*'. "
                          "Repeatable."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _values(corpus: Path | None, **flags: Any) -> dict[str, Any]:
    """The dotted config values the command line gave (None and empty mean not given)."""
    names = {"device": "train.device", "precision": "train.precision", "encoding": "data.encoding",
             "include": "data.include", "exclude": "data.exclude", "time_budget": "train.time_budget",
             "max_steps": "train.max_steps", "max_epochs": "train.max_epochs", "seed": "train.seed",
             "plan": "train.plan"}
    values = {names[k]: v for k, v in flags.items() if v is not None and v != ()}
    return {**values, "data.path": _corpus_path(corpus)} if corpus is not None else values


@main.command()
@click.argument("corpus", required=False, type=click.Path(path_type=Path))
@click.option("--run-dir", type=click.Path(path_type=Path),
              help="Directory for config.toml, checkpoints/, metrics.jsonl and tb/ (TensorBoard).")
@_run_options
@click.option("--max-steps", type=count(1), help="Stop after N optimizer steps (train.max_steps).")
@click.option("--max-epochs", type=FiniteFloat(min=0),
              help="Stop after N passes over the train split (train.max_epochs).")
@click.option("--time-budget", type=Duration(), metavar="DURATION",
              help="Stop after this much time: seconds, or 90s, 10m, 1h30m; the lr schedule anneals to fit "
                   "(train.time_budget). Unless the config sets them, the model and optimizer are planned for it "
                   "(see `charrnn plan`).")
@click.option("--no-plan", is_flag=True, help="With --time-budget, keep the defaults instead of planning "
              "(train.plan = false).")
@click.option("--seed", type=count(0), help="Seed for weights, dropout and samples (train.seed).")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), metavar="RUN_DIR",
              help="Continue the run in RUN_DIR from its last.pt, exactly where it stopped.")
@click.option("--overwrite", is_flag=True, help="Replace the run already in --run-dir (only charrnn's own files).")
def train(corpus: Path | None, run_dir: Path | None, config_file: Path | None, overrides: tuple[str, ...],
          max_steps: int | None, max_epochs: float | None, time_budget: float | None, no_plan: bool,
          device: str | None, seed: int | None, precision: str | None, encoding: str | None,
          include: tuple[str, ...], exclude: tuple[str, ...], resume_dir: Path | None, overwrite: bool) -> None:
    """Train a model on CORPUS, a text file or a directory of text files.

    Ctrl-C saves the run; `--resume RUN_DIR` continues it.
    """
    from charrnn.model import bpc
    from charrnn.training.loop import train as run_training
    from charrnn.training.resume import run_config
    from charrnn.training.stopping import Stopped

    values = _values(corpus, max_steps=max_steps, max_epochs=max_epochs, time_budget=time_budget, device=device,
                     seed=seed, precision=precision, encoding=encoding, include=include, exclude=exclude,
                     plan=False if no_plan else None)
    if resume_dir is not None and run_dir is not None and os.path.abspath(run_dir) != os.path.abspath(resume_dir):
        raise UserError("--resume names the run dir; leave out --run-dir or give the same one")
    run_dir = resume_dir or run_dir
    cfg, resume, plan = run_config(run_dir, resume=resume_dir is not None, config=config_file, overrides=overrides,
                                   values=values)
    try:
        result = run_training(cfg, run_dir, resume=resume, overwrite=overwrite, echo=note, progress=on_terminal(),
                              plan=plan)
    except Stopped as e:
        note(f"{e.args[0]}: stopped while reading the corpus; nothing was written")
        sys.exit(SIGNAL_EXIT[e.args[0]])
    if result.interrupted:
        sys.exit(SIGNAL_EXIT[result.stopped_by])
    note(f"stopped by {result.stopped_by} at step {result.step}: val loss {result.val_loss:.4f} nats/char "
         f"({bpc(result.val_loss):.3f} bpc), best {result.best_val_loss:.4f}; checkpoints in {run_dir / 'checkpoints'}")
    if result.baselines is not None:
        from charrnn.evaluation.static import summary

        note(f"on the validation text: {summary(bpc(result.val_loss), result.baselines)}")
        for line in result.baselines.notes:
            note(line)
    for line in result.advice:
        note(line)


@main.command()
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--time-budget", type=Duration(), metavar="DURATION", required=True,
              help="The training time to plan for: seconds, or 90s, 10m, 1h30m.")
@_run_options
def plan(corpus: Path, time_budget: float, config_file: Path | None, overrides: tuple[str, ...], device: str | None,
         precision: str | None, encoding: str | None, include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    """Print the model and optimizer `charrnn train CORPUS --time-budget T` would plan, without training.

    It reads (and caches) the corpus and times a few steps of candidate shapes on the device, as the run
    would; it writes no run dir.
    """
    from charrnn.training.plan import plan_corpus

    values = _values(corpus, time_budget=time_budget, device=device, precision=precision, encoding=encoding,
                     include=include, exclude=exclude)
    for line in plan_corpus(config_file, overrides, values, echo=note, progress=on_terminal()):
        click.echo(line)


def _corpus_path(corpus: Path | None) -> str | None:
    """The corpus as config.toml records it: absolute, and in UTF-8 (which TOML needs)."""
    if corpus is None:
        return None
    if not is_utf8(str(corpus)):
        raise UserError(f"the corpus path {str(corpus).encode('utf-8', 'surrogateescape')!r} is not valid UTF-8, "
                        "which config.toml cannot record; rename it, or link to it from a UTF-8 path")
    return os.path.abspath(corpus)
