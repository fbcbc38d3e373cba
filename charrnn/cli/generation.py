"""`charrnn sample` and `charrnn export`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click

from charrnn.cli.group import checkpoint_argument, device_option, main, note, on_terminal, refuse_combined
from charrnn.errors import UserError

if TYPE_CHECKING:
    from charrnn.api import CharModel


@main.command()
@checkpoint_argument
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
@click.option("--copy-check/--no-copy-check", default=True, show_default=True,
              help="Report on stderr the longest span of each sample found verbatim in the training corpus (file "
                   "and offset) and the share of its 20-character windows the corpus holds.")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object instead of the text: {"samples": [{"text", "copy": {"longest_copy", '
                   '"file", "offset", "copied_windows", "exact"}}]} ("log_prob" too with --beam-width).')
@device_option
def sample(checkpoint: Path, length: int, temperature: float, prime: str, prime_file: Path | None, top_k: int,
           top_p: float, seed: int | None, num_samples: int, beam_width: int | None, interactive: bool,
           copy_check: bool, as_json: bool, device: str) -> None:
    """Generate text from a checkpoint, or from a run dir's best.pt, streaming it to stdout."""
    from charrnn.api import load
    from charrnn.generation.beam import check_beam_options
    from charrnn.generation.sampling import check_sampling_options

    refuse_combined("--interactive", interactive, "prime", "prime_file", "num_samples", "beam_width", "as_json")
    refuse_combined("--beam-width", beam_width is not None, "temperature", "top_k", "top_p", "seed")
    refuse_combined("--prime-file", prime_file is not None, "prime")
    if beam_width is None:
        check_sampling_options(length, temperature, top_k, top_p, num_samples)
    else:
        check_beam_options(length, beam_width, num_samples)
    model = load(checkpoint, device)
    if prime_file is not None:
        prime, skipped = model.read_text(prime_file)
        if skipped:
            note(f"skipped {skipped:,} characters of {prime_file} that are not in the model's vocabulary")
    out = sys.stdout.buffer
    if interactive:
        from charrnn.generation.interactive import Settings, run

        run(model, Settings(length, temperature, top_k, top_p), out, seed)
        return
    if beam_width is not None:
        beams = model.beam_search(prime, length, beam_width, num_samples, progress=on_terminal() and not as_json)
        samples = [{"text": prime + beam.text, "log_prob": beam.log_prob} for beam in beams]
        if not as_json:
            _write_beams(model, out, samples, length)
    elif num_samples == 1 and not as_json:
        samples = [{"text": prime + _write_stream(model, out, prime, length, temperature, top_k, top_p, seed)}]
    else:
        texts = model.generate_many(num_samples, prime, length, temperature, top_k, top_p, seed,
                                    progress=on_terminal() and not as_json)
        samples = [{"text": prime + text} for text in texts]
        if not as_json:
            for i, sample in enumerate(samples, 1):
                out.write(f"===== sample {i} =====\n".encode() + model.vocab.to_bytes(sample["text"]) + b"\n")
    out.flush()
    if copy_check:
        _check_copies(model, samples, len(prime), quiet=as_json)
    if as_json:
        click.echo(json.dumps({"samples": samples}))


def _check_copies(model: CharModel, samples: list[dict], prime_length: int, quiet: bool) -> None:
    """Each sample's copy report, under "copy" and (unless `quiet`) on stderr; a missing corpus is a note."""
    try:
        for i, sample in enumerate(samples, 1):
            report = model.copies(sample["text"][prime_length:])
            sample["copy"] = report.to_dict()
            if not quiet:
                note(report.describe() if len(samples) == 1 else f"sample {i}: {report.describe()}")
    except UserError as e:
        note(f"copy check skipped: {e}")


def _write_stream(model: CharModel, out: BinaryIO, prime: str, length: int, temperature: float, top_k: int,
                  top_p: float, seed: int | None) -> str:
    """One sample, each character written the moment it is generated; returns what was generated."""
    out.write(model.vocab.to_bytes(prime))
    chars = []
    for char in model.stream(prime, length, temperature, top_k, top_p, seed, progress=on_terminal()):
        out.write(model.vocab.to_bytes(char))
        out.flush()
        chars.append(char)
    out.write(b"\n")
    return "".join(chars)


def _write_beams(model: CharModel, out: BinaryIO, beams: list[dict], length: int) -> None:
    """The best beams; with one, its log-probability goes to stderr."""
    for i, beam in enumerate(beams, 1):
        header = f"===== beam {i}: log-prob {beam['log_prob']:.4f} =====\n" if len(beams) > 1 else ""
        out.write(header.encode() + model.vocab.to_bytes(beam["text"]) + b"\n")
    if len(beams) == 1:
        note(f"log-prob {beams[0]['log_prob']:.4f} ({-beams[0]['log_prob'] / max(length, 1):.4f} nats/char)")


@main.command()
@checkpoint_argument
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True,
              help="Output format.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), metavar="FILE",
              help="Where to write the model, e.g. model.onnx.")
def export(checkpoint: Path, fmt: str, out: Path) -> None:
    """Write a model as ONNX, to run and sample it without charrnn or torch.

    Inputs ids [batch, time] and h0 (+ c0 for an LSTM); outputs logits and hn (+ cn); the vocabulary and
    config are in the model's metadata. Needs the onnx and onnxruntime packages: pip install 'charrnn[export]'.
    """
    from charrnn.tools.export import export_onnx

    result = export_onnx(checkpoint, out)
    note(f"wrote {result.path}: {result.cell}, inputs {', '.join(result.inputs)}, outputs "
          f"{', '.join(result.outputs)}; onnxruntime matches torch to {result.max_abs_diff:.1e}")
