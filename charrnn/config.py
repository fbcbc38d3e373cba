"""Run configuration: frozen dataclasses, loaded from TOML with dotted `section.key=value` overrides."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from charrnn.errors import UserError
from charrnn.files import read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib


MAX_INT = 2**63 - 1  # the largest count anywhere: checkpoints, TOML and torch all hold 64-bit integers


def _opt(default: Any, help: str, check: Callable[[Any], bool] | None = None, rule: str = "", *,
         resumable: bool = False) -> Any:
    """A config field: help, a range check (`rule` in words), whether a resumed run may change it (its length, logging
    or place: not what it learns from, nor its shape)."""
    return field(default=default, metadata={"help": help, "check": check, "rule": rule, "resumable": resumable})


def _positive(x: float) -> bool:
    return x > 0


def _non_negative(x: float) -> bool:
    return x >= 0


@dataclass(frozen=True)
class ModelConfig:
    cell: str = _opt("lstm", "recurrent cell: 'lstm', 'gru' or 'rnn' (tanh Elman)",
                     lambda x: x in ("lstm", "gru", "rnn"), "'lstm', 'gru' or 'rnn'")
    embed_dim: int = _opt(64, "size of the character embedding", _positive, "> 0")
    hidden_size: int = _opt(512, "units per recurrent layer", _positive, "> 0")
    num_layers: int = _opt(2, "stacked recurrent layers", _positive, ">= 1")
    dropout: float = _opt(0.0, "dropout between recurrent layers and before the head",
                          lambda x: 0 <= x < 1, "in [0, 1)")
    embed_dropout: float = _opt(0.0, "dropout on the character embeddings", lambda x: 0 <= x < 1, "in [0, 1)")
    weight_dropout: float = _opt(0.0, "DropConnect on the recurrent weights (weight_hh): one mask a step, shared "
                                 "by every stream and time step", lambda x: 0 <= x < 1, "in [0, 1)")
    head_cutoff: int = _opt(0, "0: a softmax head over the whole vocabulary; N: an adaptive softmax head "
                            "(nn.AdaptiveLogSoftmaxWithLoss) over the N most frequent symbols and one cluster of the "
                            "rest, which a step scores only where they occur: the same exact probabilities, far "
                            "cheaper where thousands of rare symbols make up a sliver of the text (N >= the "
                            "vocabulary size - 1: the full head)", _non_negative, ">= 0")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = _opt(64, "parallel streams per step (global, across all processes)", _positive, ">= 1")
    seq_len: int = _opt(100, "characters per truncated-BPTT window", _positive, ">= 1")
    lr: float = _opt(2e-3, "peak learning rate (AdamW)", _positive, "> 0", resumable=True)
    min_lr_ratio: float = _opt(0.1, "cosine decays to lr * min_lr_ratio", lambda x: 0 <= x <= 1, "in [0, 1]",
                               resumable=True)
    weight_decay: float = _opt(0.01, "AdamW weight decay (matrices only)", _non_negative, ">= 0", resumable=True)
    warmup_steps: int = _opt(100, "linear warmup steps", _non_negative, ">= 0", resumable=True)
    schedule: str = _opt("cosine", "lr after warmup: 'cosine' or 'constant'",
                         lambda x: x in ("cosine", "constant"), "'cosine' or 'constant'", resumable=True)
    grad_clip: float = _opt(1.0, "clip the global gradient norm to this (0 = off)", _non_negative, ">= 0",
                            resumable=True)
    max_steps: int = _opt(5000, "stop after this many optimizer steps (also the cosine horizon)",
                          _positive, ">= 1", resumable=True)
    max_epochs: float = _opt(0.0, "stop after this many passes over the train split (0 = no limit)",
                             _non_negative, ">= 0", resumable=True)
    time_budget: float = _opt(0.0, "stop after this many seconds of training, and anneal the lr to "
                              "finish by then (0 = no limit)", _non_negative, ">= 0", resumable=True)
    reset_every: int = _opt(20, "zero each stream's carried state every N windows, staggered across streams, so "
                            "the model also learns to start from a blank state (0 = never)", _non_negative, ">= 0")
    eval_every: int = _opt(500, "validate every N steps", _positive, ">= 1", resumable=True)
    eval_chars: int = _opt(120_000, "characters scored per validation (the same ones every time, spread over the "
                           "split); 0 = the whole split", _non_negative, ">= 0", resumable=True)
    eval_streams: int = _opt(32, "validation streams, each from a blank state, whatever the batch and window: so "
                             "runs of any batch are scored on the same text (0 = as many as the batch, as earlier "
                             "releases did)",
                             lambda x: 0 <= x <= 65_536, "in [0, 65536]", resumable=True)
    checkpoint_every: int = _opt(500, "write checkpoints/last.pt every N steps", _positive, ">= 1", resumable=True)
    keep_last: int = _opt(0, "also keep the last K periodic checkpoints as step-N.pt (0 = none)",
                          _non_negative, ">= 0", resumable=True)
    sample_every: int = _opt(500, "log a generated sample to TensorBoard every N steps (0 = never)",
                             _non_negative, ">= 0", resumable=True)
    sample_length: int = _opt(300, "characters per logged sample", lambda x: 1 <= x <= 100_000,
                              "in [1, 100000]", resumable=True)
    log_every: int = _opt(10, "log train scalars every N steps", _positive, ">= 1", resumable=True)
    baselines: bool = _opt(True, "print baselines (unigram, n-gram, zlib, bz2, xz) by the final loss", resumable=True)
    plan: bool = _opt(True, "with a time_budget and no model shape set (model.hidden_size, model.num_layers), plan the "
                      "model and optimizer keys left unset for this corpus, budget and device (`charrnn plan`)")
    seed: int = _opt(1337, "seed for weights, dropout and sampling", lambda x: 0 <= x < 2**63, "in [0, 2**63)")
    device: str = _opt("auto", "'auto', 'cpu', 'cuda' or 'cuda:N'", resumable=True)
    precision: str = _opt("fp32", "'fp32'; 'bf16' autocast; 'fp16' (CUDA only); 'auto': bf16 on a CUDA card that "
                          "has it, and on a CPU the faster of fp32 and bf16 in a timed trial of this shape (cached)",
                          lambda x: x in ("fp32", "bf16", "fp16", "auto"), "'fp32', 'bf16', 'fp16' or 'auto'",
                          resumable=True)


@dataclass(frozen=True)
class DataConfig:
    path: str = _opt("", "the corpus: a text file or a directory of them (a resumed run may name the same text at "
                     "a new place)", resumable=True)
    val_fraction: float = _opt(0.1, "the fraction of the corpus's characters held out for validation",
                               lambda x: 0 < x < 1, "in (0, 1)")
    split: str = _opt("auto", "what is held out: 'tail' (the last val_fraction), 'hash' (files and 64K blocks "
                      "picked by a hash of their paths) or 'auto' (tail for a file, hash for a directory)",
                      lambda x: x in ("auto", "tail", "hash"), "'auto', 'tail' or 'hash'")
    encoding: str = _opt("utf-8", "a Python codec name, or 'bytes' for a raw 256-symbol vocabulary")
    include: tuple[str, ...] = _opt((), "for a directory corpus: globs of the files to use, matched against the path "
                                    "relative to the directory, e.g. ['*.c', '*.h'] (empty = every file)")
    exclude: tuple[str, ...] = _opt((), "for a directory corpus: globs of files to leave out, e.g. ['tests/*']")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict, as stored in checkpoints."""
        return {s.name: {f.name: getattr(getattr(self, s.name), f.name) for f in fields(s.type_cls)}
                for s in _SECTIONS}

    def to_toml(self) -> str:
        """The resolved config as a TOML document."""
        parts = []
        for section, values in self.to_dict().items():
            parts.append(f"[{section}]")
            parts += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
            parts.append("")
        return "\n".join(parts)

    def with_overrides(self, overrides: Sequence[str], values: Mapping[str, Any] | None = None) -> Config:
        """A copy with `section.key=value` overrides and dotted `values` applied and validated."""
        return from_dict(self.to_dict(), overrides, values)


@dataclass(frozen=True)
class _Section:
    name: str
    type_cls: type

_SECTIONS = (_Section("model", ModelConfig), _Section("train", TrainConfig), _Section("data", DataConfig))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(map(_toml_value, v)) + "]"
    return repr(v)


def _toml_string(text: str) -> str:
    """A TOML basic string; unlike JSON, TOML spells characters beyond U+FFFF as one \\U escape, never as a pair."""
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() and not 0xD800 <= ord(char) <= 0xDFFF:
            out.append(char)
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def _parse_override(item: str) -> tuple[str, str, Any]:
    key, sep, raw = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise UserError(f"bad override {item!r}: expected section.key=value, e.g. train.lr=3e-3")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as cuda:1 is a string
    return section, name, value


_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool) and -MAX_INT - 1 <= v <= MAX_INT,
            "an integer below 2**63 in size"),
    "float": (lambda v: isinstance(v, float) and math.isfinite(v), "a finite number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "tuple[str, ...]": (lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v), "a list of strings"),
}


def _coerce(where: str, f: Any, value: Any) -> Any:
    """Check the type of one value; ints are accepted where a float is expected."""
    want = f.type
    if want == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want.startswith("tuple") and isinstance(value, list):
        value = tuple(value)
    if not _TYPES[want][0](value):
        raise UserError(f"config {where} must be {_TYPES[want][1]}, got {value!r}")
    check = f.metadata.get("check")
    if check is not None and not check(value):
        raise UserError(f"config {where} must be {f.metadata['rule']}, got {value!r}")
    return value


def from_dict(data: Mapping[str, Any], overrides: Sequence[str] = (),
              values: Mapping[str, Any] | None = None) -> Config:
    """A validated Config from nested dicts, `section.key=value` overrides, then dotted `values`; unknown keys fail."""
    merged: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if not isinstance(table, Mapping):
            raise UserError(f"config section [{section}] must be a table")
        merged[section] = dict(table)
    dotted = [_parse_override(item) for item in overrides]
    dotted += [(*key.split(".", 1), value) for key, value in (values or {}).items()]
    for section, name, value in dotted:
        merged.setdefault(section, {})[name] = value
    known = {s.name: s for s in _SECTIONS}
    for section in merged:
        if section not in known:
            raise UserError(f"unknown config section [{section}] (known: {', '.join(known)})")
    parts = {}
    for s in _SECTIONS:
        given = merged.get(s.name, {})
        by_name = {f.name: f for f in fields(s.type_cls)}
        for name in given:
            if name not in by_name:
                raise UserError(f"unknown config key {s.name}.{name} (known: {', '.join(by_name)})")
        kwargs = {name: _coerce(f"{s.name}.{name}", by_name[name], v) for name, v in given.items()}
        defaults = s.type_cls()
        for name, f in by_name.items():  # defaults are checked too, so a bad default cannot hide
            if name not in kwargs and f.default is not MISSING:
                _coerce(f"{s.name}.{name}", f, getattr(defaults, name))
        parts[s.name] = replace(defaults, **kwargs)
    return Config(**parts)


def presets() -> list[str]:
    """The names of the presets that ship inside the package (configs/ holds the same files, to read)."""
    return sorted(p.name.removesuffix(".toml") for p in resources.files("charrnn.presets").iterdir()
                  if p.name.endswith(".toml"))


def config_text(path: Path | str) -> tuple[str, str]:
    """(where, TOML text) of a config file, or of a preset when `path` names one and no such file exists."""
    path = Path(path)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1:
        if path.name in presets():
            return f"preset {path.name}", resources.files("charrnn.presets").joinpath(f"{path.name}.toml").read_text(
                encoding="utf-8")
        raise UserError(f"config file not found: {path} (nor is it a preset: {', '.join(presets())})")
    return f"config file {path}", read_text(path, "config file")


def config_data(path: Path | str | None) -> dict[str, Any]:
    """The tables of a TOML config file or a preset by name; none for None."""
    where, text = config_text(path) if path is not None else ("", "")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{where} is not valid TOML: {e}") from None


def load_config(path: Path | str | None, overrides: Sequence[str] = (),
                values: Mapping[str, Any] | None = None) -> Config:
    """A config file or preset (or the defaults) with `section.key=value` overrides and dotted `values` applied."""
    return from_dict(config_data(path), overrides, values)


def check_resumable(saved: Config, new: Config) -> None:
    """Refuse a change that a resumed run cannot take (see `resumable` in `_opt`), naming the key."""
    old_values, new_values = saved.to_dict(), new.to_dict()
    for s in _SECTIONS:
        for f in fields(s.type_cls):
            old, value = old_values[s.name][f.name], new_values[s.name][f.name]
            if value != old and not f.metadata["resumable"]:
                raise UserError(f"cannot change {s.name}.{f.name} when resuming ({old!r} -> {value!r}); "
                                "start a new run instead")


def reference() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every config key, for documentation."""
    return [(f"{s.name}.{f.name}", f.default, f.metadata["help"])
            for s in _SECTIONS for f in fields(s.type_cls)]
