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
            _discard_stdout()
            sys.exit(0)
        except OSError as e:  # stdout on a full disk, a closed terminal: nothing more can be shown there
            _discard_stdout()
            _note(f"Error: cannot write the output: {e.strerror or e}")
            sys.exit(1)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit has nowhere to fail."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


_SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}  # the shell's 128 + signal number


def _note(message: str) -> None:
    """A message on stderr; if stderr is full or closed, the message is lost but the work goes on."""
    try:
        click.echo(message, err=True)
    except OSError:
        pass


def _is_utf8(text: str) -> bool:
    """False for a path that held undecodable bytes (Python keeps them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16", "auto"]),
              help="Mixed precision (train.precision): bf16 on CUDA or an AMX CPU, fp16 on CUDA, auto.")
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
    if corpus is not None and not _is_utf8(str(corpus)):
        raise UserError(f"the corpus path {str(corpus).encode('utf-8', 'surrogateescape')!r} is not valid UTF-8, "
                        "which config.toml cannot record; rename it, or link to it from a UTF-8 path")
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
@click.option("--prime-file", type=click.Path(path_type=Path), metavar="FILE",
              help="Warm the state on the text of FILE instead (decoded as the training corpus was).")
@click.option("--top-k", default=0, show_default=True, type=int,
              help="Sample only from the K likeliest characters (0 = no limit).")
@click.option("--top-p", default=1.0, show_default=True, type=float,
              help="Sample only from the smallest set of characters holding this much probability.")
@click.option("--seed", type=int, help="Seed for reproducible output (default: random).")
@click.option("--num-samples", default=1, show_default=True, type=int,
              help="Independent samples, generated together and printed one after another; "
                   "with --beam-width, the N best beams, each with its log-probability.")
@click.option("--beam-width", type=click.IntRange(min=1), metavar="K",
              help="Beam search with K beams instead of sampling: the likeliest continuation it finds "
                   "(deterministic; 1 is greedy).")
@click.option("--interactive", "-i", is_flag=True,
              help="A prompt: each line you type is continued; :help lists the commands, Ctrl-D quits.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def sample(checkpoint: Path, length: int, temperature: float, prime: str, prime_file: Path | None, top_k: int,
           top_p: float, seed: int | None, num_samples: int, beam_width: int | None, interactive: bool,
           device: str) -> None:
    """Generate text from a checkpoint, or from a run dir's best.pt, streaming it to stdout."""
    from charrnn.api import load
    from charrnn.beam import check_beam_options
    from charrnn.sampling import check_options

    _refuse_combined("--interactive", interactive, "prime", "prime_file", "num_samples", "beam_width")
    _refuse_combined("--beam-width", beam_width is not None, "temperature", "top_k", "top_p", "seed")
    _refuse_combined("--prime-file", prime_file is not None, "prime")
    if beam_width is None:
        check_options(length, temperature, top_k, top_p, num_samples)
    else:
        check_beam_options(length, beam_width, num_samples)
    model = load(checkpoint, device)
    if prime_file is not None:
        prime, skipped = model.read_text(prime_file)
        if skipped:
            _note(f"skipped {skipped:,} characters of {prime_file} that are not in the model's vocabulary")
    out = sys.stdout.buffer
    if interactive:
        from charrnn.interactive import Settings, run

        run(model, Settings(length, temperature, top_k, top_p), out, seed)
    elif beam_width is not None:
        beams = model.beam_search(prime, length, beam_width, num_samples)
        for i, beam in enumerate(beams, 1):
            header = f"===== beam {i}: log-prob {beam.log_prob:.4f} =====\n" if num_samples > 1 else ""
            out.write(header.encode() + model.vocab.to_bytes(prime + beam.text) + b"\n")
        if num_samples == 1:
            _note(f"log-prob {beams[0].log_prob:.4f} ({-beams[0].log_prob / max(length, 1):.4f} nats/char)")
    elif num_samples == 1:
        out.write(model.vocab.to_bytes(prime))
        for char in model.stream(prime, length, temperature, top_k, top_p, seed):
            out.write(model.vocab.to_bytes(char))
            out.flush()
        out.write(b"\n")
    else:
        texts = model.generate_many(num_samples, prime, length, temperature, top_k, top_p, seed)
        for i, text in enumerate(texts, 1):
            out.write(f"===== sample {i} =====\n".encode() + model.vocab.to_bytes(prime + text) + b"\n")
    out.flush()


def _refuse_combined(option: str, given: bool, *others: str) -> None:
    """UserError when `option` is given together with any of the `others` (parameter names) given explicitly."""
    ctx = click.get_current_context()
    clash = [f"--{name.replace('_', '-')}" for name in others
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
    if given and clash:
        raise UserError(f"{option} cannot be combined with {', '.join(clash)}")


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path), metavar="CKPT_OR_RUN_DIR")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True,
              help="Output format.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), metavar="FILE",
              help="Where to write the model, e.g. model.onnx.")
def export(checkpoint: Path, fmt: str, out: Path) -> None:
    """Write a model as ONNX, to run and sample it without charrnn or torch.

    Inputs ids [batch, time] and h0 (+ c0 for an LSTM); outputs logits and hn (+ cn); the vocabulary and
    config are in the model's metadata. Needs the onnx and onnxruntime packages: pip install 'charrnn[export]'.
    """
    from charrnn.export import export_onnx

    result = export_onnx(checkpoint, out)
    _note(f"wrote {result.path}: {result.cell}, inputs {', '.join(result.inputs)}, outputs "
          f"{', '.join(result.outputs)}; onnxruntime matches torch to {result.max_abs_diff:.1e}")


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path(path_type=Path), metavar="CKPT_OR_RUN_DIR")
@click.argument("text_file", type=click.Path(path_type=Path), metavar="FILE")
@click.option("--streams", default=1, show_default=True, type=click.IntRange(min=1),
              help="Score the file as N parallel streams, each starting from a blank state: faster on big files, "
                   "but approximate (1 is exact: the state is carried through the whole file).")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"loss", "bpc", "chars", "skipped"}, and "dynamic": {...} with --dynamic.')
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dynamic", is_flag=True,
              help="Also score FILE with dynamic evaluation (Krause et al., 2018): after scoring each segment the "
                   "model takes a gradient step on it, so it adapts to the text as it reads. The checkpoint is only "
                   "read. Printed beside the static figure.")
# The defaults won scripts/dynamic_search.py on tinyshakespeare's validation split (see charrnn/dynamic.py).
@click.option("--segment-len", default=50, show_default=True, type=click.IntRange(min=1),
              help="With --dynamic: characters scored between two updates.")
@click.option("--dynamic-lr", default=1e-3, show_default=True, type=click.FloatRange(min=0),
              help="With --dynamic: step size, in units of each weight's RMS gradient on training text. "
                   "The best value grows with --segment-len.")
@click.option("--decay", default=0.003, show_default=True, type=click.FloatRange(0, 1),
              help="With --dynamic: how strongly each update pulls the weights back toward the trained ones.")
@click.option("--stats-text", type=click.Path(path_type=Path), metavar="FILE",
              help="With --dynamic: text to gather the gradient statistics from (default: the end of the training "
                   "split of the checkpoint's corpus).")
def evaluate(checkpoint: Path, text_file: Path, streams: int, as_json: bool, device: str, dynamic: bool,
             segment_len: int, dynamic_lr: float, decay: float, stats_text: Path | None) -> None:
    """Report loss (nats/char) and bits per character of FILE under a checkpoint.

    Characters outside the model's vocabulary are skipped and counted.
    """
    from charrnn.evaluation import evaluate_file

    if dynamic and streams > 1:
        raise UserError("--dynamic reads the file as one stream: leave out --streams")
    progress = _interactive() and not as_json
    result = evaluate_file(checkpoint, text_file, device, streams=streams, progress=progress)
    summary = {"loss": result.loss, "bpc": result.bpc, "chars": result.chars, "skipped": result.skipped}
    if dynamic:
        from charrnn.dynamic import dynamic_evaluate_file

        adapted = dynamic_evaluate_file(checkpoint, text_file, device, segment_len=segment_len, lr=dynamic_lr,
                                        decay=decay, stats_text=stats_text, progress=progress)
        summary["dynamic"] = {"loss": adapted.loss, "bpc": adapted.bpc, "segment_len": segment_len,
                              "lr": dynamic_lr, "decay": decay}
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"{'static:  ' if dynamic else ''}loss {result.loss:.4f} nats/char, {result.bpc:.4f} bpc "
               f"over {result.chars:,} characters")
    if dynamic:
        gain = adapted.loss - result.loss
        click.echo(f"dynamic: loss {adapted.loss:.4f} nats/char, {adapted.bpc:.4f} bpc ({gain:+.4f}; "
                   f"segment_len {segment_len}, lr {dynamic_lr:g}, decay {decay:g})")
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


def _probe_specs(ctx: click.Context, param: click.Parameter, specs: tuple[str, ...]) -> dict[str, Any]:
    """--probe NAME=REGEX values -> {name: compiled regex}, refused at the edge in one line."""
    from charrnn.probes import parse_probe

    parsed: dict[str, Any] = {}
    for spec in specs:
        try:
            name, pattern = parse_probe(spec)
        except UserError as e:
            raise UserError(f"--probe {e}") from None
        if name in parsed:
            raise UserError(f"--probe {spec!r}: probe {name} is given twice")
        parsed[name] = pattern
    return parsed


@main.command()
@click.argument("checkpoint", type=click.Path(path_type=Path), metavar="CKPT_OR_RUN_DIR")
@click.argument("text_file", type=click.Path(path_type=Path), metavar="TEXT_FILE")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write the page  [default: visualize.html in the run dir]")
@click.option("--json", "json_file", type=click.Path(path_type=Path, dir_okay=False),
              help='Also write the ranking here: {"probes": [{"name", "kind", "layer", "cell", "signal", "score", '
                   '"control"}, ...], "chars", ...}.')
@click.option("--chars", default=20_000, show_default=True, type=int,
              help="Characters of TEXT_FILE to run the model over.")
@click.option("--offset", default=0, show_default=True, type=int,
              help="Start this many characters into TEXT_FILE (counting only characters the model knows).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--probe", "probes", multiple=True, metavar="NAME=REGEX", callback=_probe_specs,
              help="Also find the cell that tracks the characters inside matches of REGEX. Repeatable.")
def visualize(checkpoint: Path, text_file: Path, out: Path | None, json_file: Path | None, chars: int, offset: int,
              device: str, probes: dict[str, Any]) -> None:
    """Find the cells that track quotes, line position, brackets, indentation and comments in TEXT_FILE.

    Prints each probe's best cell, scored on held-out text beside a random-init control, and writes
    one self-contained HTML page (it opens offline) to browse every cell, gate and prediction.
    """
    from charrnn.page import write_page
    from charrnn.visualize import default_out, format_table, ranking
    from charrnn.visualize import visualize as run_visualize

    out = out or default_out(checkpoint)
    vis = run_visualize(checkpoint, text_file, chars=chars, offset=offset, device=device, user_probes=probes)
    if vis.skipped:
        _note(f"skipped {vis.skipped:,} characters that are not in the model's vocabulary")
    for result in vis.results:
        if result.name in probes and result.score is None:
            _note(f"probe {result.name}: {result.note}; its score is undefined")
    for line in format_table(vis.results):
        click.echo(line)
    size = write_page(vis, out)
    if json_file is not None:
        json_file.write_text(json.dumps({**ranking(vis), "page": str(out)}, indent=2))
    _note(f"wrote {out} ({size / 1e6:.1f} MB): open it in a browser")
