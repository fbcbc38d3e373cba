"""The `charrnn` command: parse options, call the library, print the results."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from charrnn import __version__
from charrnn.errors import UserError
from charrnn.metrics import bpc


class _Group(click.Group):
    """Turns library errors into one-line messages and Ctrl-C into exit status 130, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("\naborted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # e.g. `charrnn sample ... | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush into
            sys.exit(0)


_SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}  # the shell's 128 + signal number


def _note(message: str) -> None:
    click.echo(message, err=True)


def _interactive() -> bool:
    """Progress bars only on a terminal: in logs and pipes they are noise."""
    return sys.stderr.isatty()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charrnn")
def main() -> None:
    """charrnn: train character-level LSTM language models on any text, and sample from them."""


@main.command()
@click.argument("corpus", required=False, type=click.Path(path_type=Path))
@click.option("--run-dir", type=click.Path(path_type=Path),
              help="Directory for config.toml, checkpoints/, metrics.jsonl and tb/ (TensorBoard).")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="TOML config file, e.g. configs/shakespeare.toml. Defaults apply to keys it leaves out.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config value, e.g. --set train.lr=3e-3. Repeatable.")
@click.option("--max-steps", type=int, help="Stop after N optimizer steps (train.max_steps).")
@click.option("--max-epochs", type=float, help="Stop after N passes over the train split (train.max_epochs).")
@click.option("--time-budget", type=float, metavar="SECONDS",
              help="Stop after this many seconds of training; the lr schedule anneals to fit (train.time_budget).")
@click.option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N (train.device).")
@click.option("--seed", type=int, help="Seed for weights, dropout and samples (train.seed).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]),
              help="Mixed precision on CUDA (train.precision).")
@click.option("--encoding", help="Corpus codec, e.g. latin-1, or 'bytes' for raw bytes (data.encoding).")
@click.option("--include", multiple=True, metavar="GLOB",
              help="Directory corpus: use only files whose relative path matches, e.g. '*.py'. Repeatable.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Directory corpus: leave out files whose relative path matches, e.g. 'tests/*'. Repeatable.")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), metavar="RUN_DIR",
              help="Continue the run in RUN_DIR from its last.pt, exactly where it stopped.")
@click.option("--overwrite", is_flag=True, help="Replace the run already in --run-dir (only charrnn's own files).")
def train(corpus: Path | None, run_dir: Path | None, config_file: Path | None, overrides: tuple[str, ...],
          max_steps: int | None, max_epochs: float | None, time_budget: float | None, device: str | None,
          seed: int | None, precision: str | None, encoding: str | None, include: tuple[str, ...],
          exclude: tuple[str, ...], resume_dir: Path | None, overwrite: bool) -> None:
    """Train a model on CORPUS, a text file or a directory of text files.

    Ctrl-C saves the run; `--resume RUN_DIR` continues it.
    """
    from charrnn.config import load_config
    from charrnn.signals import Stopped
    from charrnn.train import open_resume, resume_config
    from charrnn.train import train as run_training

    flags = {"train.max_steps": max_steps, "train.max_epochs": max_epochs, "train.time_budget": time_budget,
             "train.device": device, "train.seed": seed, "train.precision": precision,
             "data.encoding": encoding, "data.include": include or None, "data.exclude": exclude or None,
             "data.path": corpus and os.path.abspath(corpus)}
    values = {key: value for key, value in flags.items() if value is not None}
    saved = None
    if resume_dir is not None:
        if run_dir is not None and os.path.abspath(run_dir) != os.path.abspath(resume_dir):
            raise UserError("--resume names the run dir; leave out --run-dir or give the same one")
        if config_file is not None:
            raise UserError("--config cannot be combined with --resume: the run keeps its own config; "
                            "use --set to change its length or logging")
        run_dir, saved = resume_dir, open_resume(resume_dir)
        cfg = resume_config(saved, overrides, values)
    else:
        if run_dir is None:
            raise UserError("missing --run-dir (or --resume RUN_DIR)")
        cfg = load_config(config_file, overrides, values)
        if not cfg.data.path:
            raise UserError("missing CORPUS: the text file or directory to train on (or data.path in --config)")
    try:
        result = run_training(cfg, run_dir, resume=saved, overwrite=overwrite, echo=_note, progress=_interactive())
    except Stopped as e:
        _note(f"{e.args[0]}: stopped while reading the corpus; nothing was written")
        sys.exit(_SIGNAL_EXIT[e.args[0]])
    if result.interrupted:
        sys.exit(_SIGNAL_EXIT[result.stopped_by])
    _note(f"stopped by {result.stopped_by} at step {result.step}: val loss {result.val_loss:.4f} nats/char "
          f"({bpc(result.val_loss):.3f} bpc), best {result.best_val_loss:.4f}; "
          f"checkpoints in {run_dir / 'checkpoints'}")


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path), metavar="CKPT_OR_RUN_DIR")
@click.option("--length", "-n", default=500, show_default=True, type=int, help="Characters to generate.")
@click.option("--temperature", "-t", default=1.0, show_default=True, type=float,
              help="Softmax temperature: lower is safer, higher is wilder; 0 is greedy argmax.")
@click.option("--prime", "-p", default="", help="Text to warm the state on; it is printed first.")
@click.option("--top-k", default=0, show_default=True, type=int,
              help="Sample only from the K likeliest characters (0 = no limit).")
@click.option("--top-p", default=1.0, show_default=True, type=float,
              help="Sample only from the smallest set of characters holding this much probability.")
@click.option("--seed", type=int, help="Seed for reproducible output (default: random).")
@click.option("--num-samples", default=1, show_default=True, type=int,
              help="Independent samples, generated together and printed one after another.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def sample(checkpoint: Path, length: int, temperature: float, prime: str, top_k: int, top_p: float,
           seed: int | None, num_samples: int, device: str) -> None:
    """Generate text from a checkpoint, or from a run dir's best.pt, streaming it to stdout."""
    from charrnn.sampling import check_options, load_sampler

    check_options(length, temperature, top_k, top_p, num_samples)
    sampler = load_sampler(checkpoint, device, seed)
    out = sys.stdout.buffer
    steps = sampler.generate(prime, length, temperature=temperature, top_k=top_k, top_p=top_p,
                             num_samples=num_samples)
    if num_samples == 1:
        out.write(sampler.vocab.to_bytes(prime))
        for chars in steps:
            out.write(sampler.vocab.to_bytes(chars[0]))
            out.flush()
        out.write(b"\n")
    else:
        texts = ["".join(column) for column in zip(*steps, strict=True)] or [""] * num_samples
        for i, text in enumerate(texts, 1):
            out.write(f"===== sample {i} =====\n".encode() + sampler.vocab.to_bytes(prime + text) + b"\n")
    out.flush()


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path(path_type=Path), metavar="CKPT_OR_RUN_DIR")
@click.argument("text_file", type=click.Path(path_type=Path), metavar="FILE")
@click.option("--streams", default=1, show_default=True, type=click.IntRange(min=1),
              help="Score the file as N parallel streams, each starting from a blank state: faster on big files, "
                   "but approximate (1 is exact: the state is carried through the whole file).")
@click.option("--json", "as_json", is_flag=True, help='Print one JSON object: {"loss", "bpc", "chars", "skipped"}.')
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def evaluate(checkpoint: Path, text_file: Path, streams: int, as_json: bool, device: str) -> None:
    """Report loss (nats/char) and bits per character of FILE under a checkpoint.

    Characters outside the model's vocabulary are skipped and counted.
    """
    from charrnn.evaluation import evaluate_file

    result = evaluate_file(checkpoint, text_file, device, streams=streams, progress=_interactive() and not as_json)
    if as_json:
        click.echo(json.dumps({"loss": result.loss, "bpc": result.bpc, "chars": result.chars,
                               "skipped": result.skipped}))
        return
    click.echo(f"loss {result.loss:.4f} nats/char, {result.bpc:.4f} bpc over {result.chars:,} characters")
    if result.skipped:
        _note(f"skipped {result.skipped:,} characters that are not in the model's vocabulary")


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path), metavar="CKPT_OR_RUN_DIR")
def info(checkpoint: Path) -> None:
    """Show a checkpoint's config, vocabulary, size, step and best validation loss."""
    from charrnn.checkpoint import describe

    for line in describe(checkpoint):
        click.echo(line)


@main.command()
@click.option("--corpus", type=click.Path(path_type=Path),
              help="Real text for charrnn's loop (default: the Python standard library's asyncio sources).")
@click.option("--shapes", default="2x128,2x512,3x512", show_default=True,
              help="Comma-separated LAYERSxHIDDEN model shapes.")
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option("--seq-len", default=100, show_default=True, type=int)
@click.option("--steps", default=12, show_default=True, type=int, help="Timed steps per measurement.")
@click.option("--rounds", default=2, show_default=True, type=int,
              help="Interleaved repeats of each measurement; the best counts.")
@click.option("--sample-length", default=400, show_default=True, type=int,
              help="Characters generated per sampling measurement.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "json_file", type=click.Path(path_type=Path), help="Also write the results as JSON here.")
def bench(corpus: Path | None, shapes: str, batch_size: int, seq_len: int, steps: int, rounds: int,
          sample_length: int, device: str, json_file: Path | None) -> None:
    """Measure training throughput against a bare PyTorch loop and the matmul peak, and sampling speed."""
    import sysconfig

    from charrnn.bench import Shape, format_table, run_bench

    corpus = corpus or Path(sysconfig.get_paths()["stdlib"]) / "asyncio"
    try:
        parsed = [Shape.parse(s) for s in shapes.split(",")]
    except ValueError:
        raise UserError(f"bad --shapes {shapes!r}: use e.g. 2x128,2x512") from None
    result = run_bench(corpus, parsed, device, batch_size, seq_len, steps, rounds, sample_length=sample_length,
                       report=_note)
    click.echo(format_table(result))
    if json_file is not None:
        json_file.write_text(json.dumps(result.to_dict(), indent=2))
