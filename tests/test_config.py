"""The config: defaults, shipped presets, overrides and their errors, TOML on Python 3.10, the docs reference."""

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import tomllib

from charrnn.cli.group import parse_duration
from charrnn.config import Config, from_dict, load_config, presets
from charrnn.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_round_trip_through_toml(tmp_path):
    cfg = load_config(None)
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == cfg


@pytest.mark.parametrize("name", ["tiny", "shakespeare", "large-gpu"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / f"{name}.toml")
    assert isinstance(cfg, Config)


def test_overrides_parse_toml_values_and_bare_strings():
    cfg = load_config(None, ["train.lr=3e-3", "model.num_layers=3", "train.device=cuda:1", "data.path='a b'",
                             "train.max_epochs=2"])
    assert cfg.train.lr == 3e-3
    assert cfg.model.num_layers == 3
    assert cfg.train.device == "cuda:1"
    assert cfg.data.path == "a b"
    assert cfg.train.max_epochs == 2.0
    assert isinstance(cfg.train.max_epochs, float)


def test_config_is_frozen():
    cfg = load_config(None)
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0


@pytest.mark.parametrize("override, message", [
    ("train.bogus=1", "unknown config key train.bogus"),
    ("nope.lr=1", "unknown config section [nope]"),
    ("train.lr=0", "train.lr must be > 0"),
    ("train.lr=-1e-3", "train.lr must be > 0"),
    ("train.lr='fast'", "train.lr must be a finite number"),
    ("model.num_layers=0", "model.num_layers must be >= 1"),
    ("model.num_layers=1.5", "model.num_layers must be an integer"),
    ("model.dropout=1.0", "model.dropout must be in [0, 1)"),
    ("model.weight_dropout=-0.1", "model.weight_dropout must be in [0, 1)"),
    ("model.weight_dropout=nan", "model.weight_dropout must be"),
    ("train.seq_len=0", "train.seq_len must be >= 1"),
    ("train.batch_size=true", "train.batch_size must be an integer"),
    ("data.val_fraction=1", "data.val_fraction must be in (0, 1)"),
    ("train.precision=fp8", "train.precision must be 'fp32', 'bf16', 'fp16' or 'auto'"),
    ("train.eval_streams=-1", "train.eval_streams must be in [0, 65536]"),
    ("train.eval_streams=1e9", "train.eval_streams must be an integer"),
    ("train.eval_streams=100000", "train.eval_streams must be in [0, 65536]"),
    ("lr=3", "expected section.key=value"),
    ("train.lr", "expected section.key=value"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = ")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[model]\nhidden = 3\n")
    with pytest.raises(UserError, match="unknown config key model.hidden"):
        load_config(unknown)


def test_from_dict_rejects_non_table_section():
    with pytest.raises(UserError, match="must be a table"):
        from_dict({"train": 3})


def test_python_3_10_reads_toml_with_tomli(monkeypatch):
    fake = types.ModuleType("tomli")
    fake.loads, fake.TOMLDecodeError = tomllib.loads, tomllib.TOMLDecodeError
    monkeypatch.setitem(sys.modules, "tomli", fake)
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on 3.10, where there is no tomllib
    monkeypatch.setattr(sys, "version_info", (3, 10, 13, "final", 0))
    spec = importlib.util.spec_from_file_location("config_on_310", ROOT / "charrnn" / "config.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert module.tomllib is fake
    assert module.load_config(None, ["train.lr=1e-3"]).train.lr == 1e-3


def test_pyproject_asks_for_tomli_on_python_3_10():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "tomli>=2.0; python_version < '3.11'" in deps


def test_list_values_and_python_values_override():
    cfg = load_config(None, ["data.include=['*.c', '*.h']"], {"data.exclude": ("tests/*",), "train.seed": 3})
    assert cfg.data.include == ("*.c", "*.h")
    assert cfg.data.exclude == ("tests/*",)
    assert cfg.train.seed == 3
    with pytest.raises(UserError, match="data.include must be a list of strings"):
        load_config(None, ["data.include=3"])


def test_the_docs_config_reference_is_current():
    from charrnn.config import _toml_value, reference

    readme = (ROOT / "docs" / "config.md").read_text()
    for key, default, help_text in reference():
        assert f"| `{key}` | `{_toml_value(default)}` | {help_text} |" in readme, key


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0),
                                           ("1.5h", 5400.0), ("2m30s", 150.0), ("0", 0.0), (" 10M ", 600.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5", "inf", "nan", "h", "1h30", "5m10h", "1e400"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_the_presets_ship_in_the_package_and_match_configs():
    names = presets()
    assert names == sorted(p.stem for p in (ROOT / "configs").glob("*.toml"))
    for name in names:  # configs/ holds the readable copies: they must say the same
        assert (ROOT / "charrnn" / "presets" / f"{name}.toml").read_bytes() == \
            (ROOT / "configs" / f"{name}.toml").read_bytes()
        assert load_config(name) == load_config(ROOT / "configs" / f"{name}.toml")


def test_a_config_that_is_neither_a_file_nor_a_preset_names_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="config file not found: shakespear .nor is it a preset: large-gpu, "):
        load_config("shakespear")
    (tmp_path / "tiny").write_text("[train]\nmax_steps = 7\n")  # a file of that name wins over the preset
    assert load_config("tiny").train.max_steps == 7
