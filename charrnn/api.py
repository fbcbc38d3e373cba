"""The Python API: train a run from a notebook; load a model and generate, beam-search or score text with it.

    >>> import charrnn
    >>> charrnn.train("input.txt", "runs/shakespeare", "configs/shakespeare.toml", time_budget=138)
    >>> m = charrnn.load("runs/shakespeare")
    >>> print("ROMEO:" + m.generate("ROMEO:", length=200, temperature=0.5, seed=1))
    >>> m.score("To be, or not to be", prime="HAMLET:\\n")  # {"loss": ..., "bpc": ..., "chars": 19}

The `charrnn` command is a thin layer over these calls.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch

from charrnn.checkpoint import load_model
from charrnn.config import Config, reference
from charrnn.data.encoding import encode_file
from charrnn.devices import resolve_device, seeded_generator
from charrnn.errors import UserError
from charrnn.evaluation.static import score_ids
from charrnn.generation.beam import Beam, beam_search
from charrnn.generation.sampling import generate, prime_ids
from charrnn.model import CharRNN, bpc
from charrnn.vocab import Vocab

if TYPE_CHECKING:
    from charrnn.evaluation.corpus import Copy
    from charrnn.inspection.activations import Activations
    from charrnn.inspection.probes import Result as ProbeResult
    from charrnn.training.loop import TrainResult


class Score(TypedDict):
    loss: float  # nats per character
    bpc: float  # bits per character
    chars: int  # characters scored


@dataclass(frozen=True, repr=False)
class CharModel:
    """A trained model with its vocabulary and config, ready to generate and score text."""

    model: CharRNN  # the torch module, in eval mode
    vocab: Vocab
    config: Config
    path: Path | None = None  # the checkpoint it was loaded from
    _cache: dict[str, Any] = field(default_factory=dict, compare=False)  # what the first copy check loads

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        m = self.config.model
        return (f"CharModel({m.cell} {m.num_layers}x{m.hidden_size}, {self.vocab.size} characters, "
                f"{self.model.num_params():,} parameters, {str(self.path)!r} on {self.device})")

    def stream(self, prime: str = "", length: int = 500, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, seed: int | None = None, *, progress: bool = False) -> Iterator[str]:
        """The continuation of `prime`, one character at a time, as it is generated.

        Bad options and prime characters outside the vocabulary fail at the call, before iteration.
        An empty prime starts from a newline. `seed` makes the text reproducible. `progress` shows a
        bar on stderr while a long prime is read.
        """
        steps = generate(self.model, self.vocab, prime, length, temperature=temperature, top_k=top_k, top_p=top_p,
                         generator=seeded_generator(self.device, seed), progress=progress)
        return (chars[0] for chars in steps)

    def generate(self, prime: str = "", length: int = 500, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int | None = None) -> str:
        """The continuation of `prime` (without the prime): `length` characters, sampled."""
        return "".join(self.stream(prime, length, temperature, top_k, top_p, seed))

    def generate_many(self, num_samples: int, prime: str = "", length: int = 500, temperature: float = 1.0,
                      top_k: int = 0, top_p: float = 1.0, seed: int | None = None, *,
                      progress: bool = False) -> list[str]:
        """`num_samples` independent continuations of `prime`, generated together as one batch."""
        steps = generate(self.model, self.vocab, prime, length, temperature=temperature, top_k=top_k, top_p=top_p,
                         num_samples=num_samples, generator=seeded_generator(self.device, seed), progress=progress)
        return ["".join(column) for column in zip(*steps, strict=True)] or [""] * num_samples

    def beam_search(self, prime: str = "", length: int = 500, beam_width: int = 8, num_results: int = 1, *,
                    progress: bool = False) -> list[Beam]:
        """The `num_results` most probable continuations of `prime` that `beam_width` beams find, best first.

        Deterministic. Beam width 1 is greedy decoding; any width is never worse than greedy.
        """
        return beam_search(self.model, self.vocab, prime, length, beam_width, num_results, progress)

    @torch.inference_mode()
    def score(self, text: str, prime: str = "") -> Score:
        """Loss of `text` following `prime`, every character of `text` scored, the state carried throughout.

        An empty prime means the start that generation uses: a newline.
        """
        if not text:
            raise UserError("nothing to score: the text is empty")
        context = prime_ids(self.vocab, prime)
        ids = torch.tensor(context + self.vocab.encode(text), device=self.device)
        # the first len(context) - 1 targets are the prime's own characters
        loss = score_ids(self.model, ids, skip=len(context) - 1) / len(text)
        return {"loss": loss, "bpc": bpc(loss), "chars": len(text)}

    def activations(self, text: str) -> Activations:
        """Every layer's states and gates, and the next-character distribution, after each character of `text`."""
        from charrnn.inspection.activations import record

        return record(self.model, self.vocab.encode(text))

    def probe(self, text: str, language: str | None = None) -> list[ProbeResult]:
        """Each probe's best cell on `text` (chosen on its first half, scored on the second) beside a random-init
        control, largest margin first; `language` ('python', 'c') is how the code probes read it (default: guessed).
        """
        from charrnn.inspection.code import guess_language
        from charrnn.inspection.visualize import probe_text

        ids = np.asarray(self.vocab.encode(text), dtype=np.int64)
        language = language if language is not None else guess_language(text)
        return probe_text(self.model, ids, text, language)[2]

    def copies(self, text: str) -> Copy:
        """How much of `text` the training corpus holds verbatim: the longest copied span (file and offset) and the
        share of its 20-character windows found there. The corpus is read (and its index built) on the first call.
        """
        from charrnn.evaluation.corpus import CorpusCopies, run_corpus

        if "copies" not in self._cache:
            self._cache["copies"] = CorpusCopies(run_corpus(self.config, self.vocab, "the copy check reads"))
        return self._cache["copies"].check(np.asarray(self.vocab.encode(text), dtype=np.int64))

    def read_text(self, path: str | Path) -> tuple[str, int]:
        """A text file decoded as the model's corpus was; characters outside the vocabulary are dropped and counted."""
        ids, skipped = encode_file(Path(path), self.vocab, self.config.data.encoding)
        return self.vocab.decode(ids.tolist()), skipped


def load(path: str | Path, device: str = "auto") -> CharModel:
    """Load a checkpoint, or a run dir's best.pt (last.pt before the first evaluation), onto `device`."""
    loaded = load_model(Path(path), resolve_device(device))
    return CharModel(loaded.model, loaded.vocab, loaded.config, loaded.path)


def train(corpus: str | Path | None, run_dir: str | Path, config: str | Path | Config | None = None, *,
          resume: bool = False, overwrite: bool = False, progress: bool = True, echo: Callable[[str], None] = print,
          **overrides: Any) -> TrainResult:
    """Train a run on `corpus` (a text file or directory) in `run_dir`, as `charrnn train` does.

    `config` is a TOML file (e.g. "configs/tiny.toml") or a `Config`; keyword overrides name any config
    key, bare when the name is unique (`hidden_size=256, max_steps=2000`) or dotted (`**{"train.lr": 3e-3}`).
    `resume=True` continues the run in `run_dir` with its own config. With a `time_budget`, the model and optimizer
    keys the config file and overrides leave unset are planned (a `Config` object sets every key). Messages go to
    `echo`.
    """
    from charrnn.training.loop import train as run_training
    from charrnn.training.resume import run_config

    values = _dotted(overrides)
    if corpus is not None:
        values["data.path"] = str(Path(corpus).absolute())
    config = Path(config) if isinstance(config, str) else config
    cfg, found, plan = run_config(Path(run_dir), resume=resume, config=config, values=values)
    return run_training(cfg, Path(run_dir), resume=found, overwrite=overwrite, echo=echo, progress=progress,
                        plan=plan)


fit = train  # the name of charrnn 0.1, kept so that its notebooks still run


def _dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """Keyword overrides as dotted config keys: `lr` -> `train.lr`; dotted keys pass through."""
    sections: dict[str, list[str]] = {}
    for key, _, _ in reference():
        section, name = key.split(".")
        sections.setdefault(name, []).append(section)
    values = {}
    for name, value in overrides.items():
        if "." in name:
            values[name] = value
        elif len(sections.get(name, ())) == 1:
            values[f"{sections[name][0]}.{name}"] = value
        elif name in sections:
            raise UserError(f"config key {name!r} is in several sections: write it as one of "
                            + ", ".join(f"'{s}.{name}'" for s in sections[name]))
        else:
            close = difflib.get_close_matches(name, sections, n=1)
            raise UserError(f"unknown config key {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return values
