"""`charrnn eval` and `charrnn info`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from charrnn.cli.group import FiniteFloat, checkpoint_argument, count, device_option, main, note, on_terminal
from charrnn.errors import UserError


@main.command(name="eval")
@checkpoint_argument
@click.argument("text_file", type=click.Path(path_type=Path), metavar="[FILE]", required=False)
@click.option("--streams", default=1, show_default=True, type=count(1),
              help="Score the file as N parallel streams, each starting from a blank state: faster on big files, "
                   "but approximate (1 is exact: the state is carried through the whole file).")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"loss", "bpc", "chars", "skipped", "baselines": {name: bpc}}, and '
                   '"dynamic": {...} with --dynamic.')
@click.option("--baselines/--no-baselines", "with_baselines", default=True, show_default=True,
              help="Print the model's figure beside a unigram, the best Kneser-Ney n-gram (order <= 8, both "
                   "trained on the run's training split) and zlib, bz2 and xz on the same text.")
@device_option
@click.option("--dynamic", is_flag=True,
              help="Also score FILE with dynamic evaluation (Krause et al., 2018): after scoring each segment the "
                   "model takes a gradient step on it, so it adapts to the text as it reads. The checkpoint is only "
                   "read. Printed beside the static figure.")
# The defaults won scripts/dynamic_search.py on tinyshakespeare's validation split (see charrnn/evaluation/dynamic.py).
@click.option("--segment-len", default=50, show_default=True, type=count(1),
              help="With --dynamic: characters scored between two updates.")
@click.option("--dynamic-lr", default=1e-3, show_default=True, type=FiniteFloat(min=0),
              help="With --dynamic: step size, in units of each weight's RMS gradient on training text. "
                   "The best value grows with --segment-len.")
@click.option("--decay", default=0.003, show_default=True, type=FiniteFloat(0, 1),
              help="With --dynamic: how strongly each update pulls the weights back toward the trained ones.")
@click.option("--stats-text", type=click.Path(path_type=Path), metavar="FILE",
              help="With --dynamic: text to gather the gradient statistics from (default: the end of the training "
                   "split of the checkpoint's corpus).")
def evaluate(checkpoint: Path, text_file: Path | None, streams: int, as_json: bool, with_baselines: bool,
             device: str, dynamic: bool, segment_len: int, dynamic_lr: float, decay: float,
             stats_text: Path | None) -> None:
    """Report loss (nats/char) and bits per character of FILE under a checkpoint, beside simple baselines.

    Without FILE, score the run's own validation split exactly as training scored it. Characters outside
    the model's vocabulary are skipped and counted.
    """
    from charrnn.evaluation.static import evaluate_file, evaluate_split, summary

    if dynamic and streams > 1:
        raise UserError("--dynamic reads the file as one stream: leave out --streams")
    if text_file is None and (dynamic or streams > 1):
        raise UserError(f"{'--dynamic' if dynamic else '--streams'} scores a FILE: give one")
    progress = on_terminal() and not as_json
    if text_file is None:
        result = evaluate_split(checkpoint, device, with_baselines=with_baselines, progress=progress)
    else:
        result = evaluate_file(checkpoint, text_file, device, streams=streams, progress=progress,
                               with_baselines=with_baselines)
    summary_json = {"loss": result.loss, "bpc": result.bpc, "chars": result.chars, "skipped": result.skipped}
    if result.baselines is not None:
        summary_json["baselines"] = result.baselines.bpc
    if dynamic:
        from charrnn.evaluation.dynamic import dynamic_evaluate_file

        adapted = dynamic_evaluate_file(checkpoint, text_file, device, segment_len=segment_len, lr=dynamic_lr,
                                        decay=decay, stats_text=stats_text, progress=progress)
        summary_json["dynamic"] = {"loss": adapted.loss, "bpc": adapted.bpc, "segment_len": segment_len,
                                   "lr": dynamic_lr, "decay": decay}
    if as_json:
        click.echo(json.dumps(summary_json))
        return
    what = "characters" if text_file else "characters of the validation split"
    click.echo(f"{'static:  ' if dynamic else ''}loss {result.loss:.4f} nats/char, {result.bpc:.4f} bpc "
               f"over {result.chars:,} {what}")
    if dynamic:
        gain = adapted.loss - result.loss
        click.echo(f"dynamic: loss {adapted.loss:.4f} nats/char, {adapted.bpc:.4f} bpc ({gain:+.4f}; "
                   f"segment_len {segment_len}, lr {dynamic_lr:g}, decay {decay:g})")
    if result.baselines is not None:
        click.echo(summary(result.bpc, result.baselines))
    for line in result.notes:
        note(line)
    if result.skipped:
        note(f"skipped {result.skipped:,} characters that are not in the model's vocabulary")


@main.command()
@checkpoint_argument
def info(checkpoint: Path) -> None:
    """Show a checkpoint's config, vocabulary, size, step and best validation loss."""
    from charrnn.checkpoint import describe

    for line in describe(checkpoint):
        click.echo(line)
