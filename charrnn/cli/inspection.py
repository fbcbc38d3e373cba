"""`charrnn visualize` and `charrnn bench`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from charrnn.cli.group import checkpoint_argument, count, device_option, main, note
from charrnn.errors import UserError
from charrnn.files import write_atomic


def _probe_specs(ctx: click.Context, param: click.Parameter, specs: tuple[str, ...]) -> dict[str, Any]:
    """--probe NAME=REGEX values -> {name: compiled regex}, refused at the edge in one line."""
    from charrnn.inspection.probes import parse_probe

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
@checkpoint_argument
@click.argument("text_file", type=click.Path(path_type=Path), metavar="TEXT_FILE")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write the page  [default: visualize.html in the run dir]")
@click.option("--json", "json_file", type=click.Path(path_type=Path, dir_okay=False),
              help='Also write the ranking here: {"probes": [{"name", "kind", "layer", "cell", "signal", "score", '
                   '"control", "margin"}, ...], "language", "chars", ...}.')
@click.option("--chars", default=20_000, show_default=True, type=int,
              help="Characters of TEXT_FILE to run the model over.")
@click.option("--offset", default=0, show_default=True, type=int,
              help="Start this many characters into TEXT_FILE (counting only characters the model knows).")
@click.option("--lang", "language", type=click.Choice(["python", "c"]),
              help="How the code probes (in_string, in_if, if_body_depth) read TEXT_FILE: Python, or C and its "
                   "kin  [default: from the file name, else guessed from the text]")
@device_option
@click.option("--probe", "probes", multiple=True, metavar="NAME=REGEX", callback=_probe_specs,
              help="Also find the cell that tracks the characters inside matches of REGEX. Repeatable.")
def visualize(checkpoint: Path, text_file: Path, out: Path | None, json_file: Path | None, chars: int, offset: int,
              language: str | None, device: str, probes: dict[str, Any]) -> None:
    """Find the cells that track quotes, strings, if conditions, line position, brackets and comments in TEXT_FILE.

    Prints each probe's best cell, scored on held-out text beside a random-init control, and writes
    one self-contained HTML page (it opens offline) to browse every cell, gate and prediction.
    """
    from charrnn.inspection.page import write_page
    from charrnn.inspection.visualize import default_out, format_table, ranking
    from charrnn.inspection.visualize import visualize as run_visualize

    out = out or default_out(checkpoint)
    vis = run_visualize(checkpoint, text_file, chars=chars, offset=offset, device=device, user_probes=probes,
                        language=language)
    if vis.skipped:
        note(f"skipped {vis.skipped:,} characters that are not in the model's vocabulary")
    _say_split(vis.config, vis.vocab, text_file)
    note(f"the code probes read {text_file} as {vis.language or 'prose (no code probes; --lang sets a language)'}; "
         "probes sorted by margin, score - control")
    for result in vis.results:
        if result.name in probes and result.score is None:
            note(f"probe {result.name}: {result.note}; its score is undefined")
    for line in format_table(vis.results):
        click.echo(line)
    size = write_page(vis, out)
    if json_file is not None:
        write_atomic(json_file, json.dumps({**ranking(vis), "page": str(out)}, indent=2) + "\n")
    note(f"wrote {out} ({size / 1e6:.1f} MB): open it in a browser")


@main.command()
@click.option("--corpus", type=click.Path(path_type=Path),
              help="Real text for charrnn's loop (default: the Python standard library's asyncio sources).")
@click.option("--shapes", default="2x128,2x512,3x512", show_default=True,
              help="Comma-separated LAYERSxHIDDEN model shapes.")
@click.option("--batch-size", default=64, show_default=True, type=count(1))
@click.option("--seq-len", default=100, show_default=True, type=count(1))
@click.option("--steps", default=12, show_default=True, type=count(1, 100_000), help="Timed steps per measurement.")
@click.option("--rounds", default=2, show_default=True, type=count(1, 1_000),
              help="Interleaved repeats of each measurement; the best counts.")
@click.option("--sample-length", default=400, show_default=True, type=count(1, 10_000_000),
              help="Characters generated per sampling measurement.")
@device_option
@click.option("--json", "json_file", type=click.Path(path_type=Path), help="Also write the results as JSON here.")
def bench(corpus: Path | None, shapes: str, batch_size: int, seq_len: int, steps: int, rounds: int,
          sample_length: int, device: str, json_file: Path | None) -> None:
    """Measure training throughput against a bare PyTorch loop and the matmul peak, and sampling speed."""
    import sysconfig

    from charrnn.tools.bench import Shape, format_table, run_bench

    corpus = corpus or Path(sysconfig.get_paths()["stdlib"]) / "asyncio"
    try:
        parsed = [Shape.parse(s) for s in shapes.split(",")]
    except ValueError:
        raise UserError(f"bad --shapes {shapes!r}: use e.g. 2x128,2x512") from None
    result = run_bench(corpus, parsed, device, batch_size, seq_len, steps, rounds, sample_length=sample_length,
                       report=note)
    click.echo(format_table(result))
    if json_file is not None:
        write_atomic(json_file, json.dumps(result.to_dict(), indent=2) + "\n")


def _say_split(config: Any, vocab: Any, text_file: Path) -> None:
    """Whether the run trained on TEXT_FILE: cells read on text they were fitted on can flatter the model."""
    from charrnn.evaluation.corpus import held_out_share

    share = held_out_share(config, vocab, text_file)
    if share is not None:
        side = ("held out for validation" if share == 1 else "in the training split" if share == 0
                else f"{share:.0%} held out for validation, the rest in the training split")
        note(f"{text_file} is part of the run's corpus: {side} (data.split = '{config.data.split}')")
