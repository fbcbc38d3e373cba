"""End to end through the real command line: the tiny run and --help in a subprocess, the rest in process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from charrnn.cli import main
from tests.helpers import ROOT, TINY_CONFIG, invoke, run_cli


def one_line_error(result) -> str:
    """The error text, after checking it is one line, with no traceback, and a non-zero exit."""
    err = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert result.returncode if hasattr(result, "returncode") else result.exit_code
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: "), err
    return lines[0]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_writes_the_run_dir(tiny_run):
    assert (tiny_run / "config.toml").is_file()
    assert {p.name for p in (tiny_run / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    assert (tiny_run / "metrics.jsonl").read_text().count("\n") == 6
    assert any((tiny_run / "tb").iterdir())


def test_sample_is_reproducible_with_a_seed(tiny_run):
    args = ("sample", tiny_run, "--length", 80, "--seed", 3, "--prime", "def ")
    first, second = invoke(*args).stdout, invoke(*args).stdout
    assert first == second
    assert first.startswith(b"def ")
    assert len(first.decode()) == 4 + 80 + 1
    other = invoke("sample", tiny_run, "--length", 80, "--seed", 4, "--prime", "def ").stdout
    assert other != first


def test_sample_options_and_several_samples(tiny_run):
    out = invoke("sample", tiny_run / "checkpoints" / "last.pt", "-n", 30, "--num-samples", 3, "--top-k", 5,
                  "--top-p", 0.9, "--temperature", 0.7, "--seed", 1, "--device", "cpu").stdout.decode()
    assert [line for line in out.splitlines() if line.startswith("=====")] == \
        ["===== sample 1 =====", "===== sample 2 =====", "===== sample 3 ====="]


def test_eval_json_and_text(tiny_run, corpus_file):
    data = json.loads(invoke("eval", tiny_run, corpus_file, "--json").stdout)
    assert set(data) == {"loss", "bpc", "chars", "skipped", "baselines"}
    assert data["bpc"] == pytest.approx(data["loss"] / 0.6931471805599453)
    assert 0 < data["loss"] < 5
    assert data["chars"] > 15_000
    assert data["skipped"] == 0
    text = cli("eval", tiny_run, corpus_file)
    assert text.exit_code == 0
    assert "nats/char" in text.stdout
    assert "bpc" in text.stdout


def test_eval_skips_and_counts_unknown_characters(tiny_run, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("def f(x):\n    return x  # ☃☃☃\n" * 30)
    data = json.loads(cli("eval", tiny_run, other, "--json").stdout)
    assert data["skipped"] == 90


def test_info(tiny_run):
    out = invoke("info", tiny_run).stdout.decode()
    for expected in ("step:        30", "best val:", "parameters:", "vocabulary:", "hidden_size = 64", "[train]"):
        assert expected in out


def test_python_m_and_every_help_text():
    out = run_cli("--help").stdout.decode()
    assert all(cmd in out for cmd in ("train", "sample", "eval", "info"))
    for command, options in {"train": ["--run-dir", "--config", "--set", "--max-steps", "--max-epochs",
                                       "--time-budget", "--device", "--seed", "--resume", "--overwrite"],
                             "sample": ["--length", "--temperature", "--prime", "--top-k", "--top-p", "--seed",
                                        "--num-samples", "--device"],
                             "eval": ["--json"], "info": []}.items():
        text = cli(command, "--help").stdout
        assert all(opt in text for opt in options), command


@pytest.mark.parametrize("args, message", [
    (["train", "nope.txt", "--run-dir", "{tmp}/r"], "corpus not found: "),
    (["train", "{corpus}", "--run-dir", "{tmp}/r", "--set", "train.lr=0"], "train.lr must be > 0"),
    (["train", "{corpus}", "--run-dir", "{tmp}/r", "--set", "model.num_layers=0"], "model.num_layers must be >= 1"),
    (["train", "{corpus}", "--run-dir", "{tmp}/r", "--set", "model.dropout=1"], "model.dropout must be in [0, 1)"),
    (["train", "{corpus}", "--run-dir", "{tmp}/r", "--set", "train.seq_len=0"], "train.seq_len must be >= 1"),
    (["train", "{corpus}", "--run-dir", "{tmp}/r", "--set", "train.wat=1"], "unknown config key train.wat"),
    (["train", "{corpus}", "--run-dir", "{tmp}/r", "--config", "{tmp}/no.toml"], "config file not found"),
    (["train", "{corpus}", "--run-dir", "{tmp}/r", "--encoding", "nope"], "unknown encoding 'nope'"),
    (["train", "{corpus}"], "missing --run-dir"),
    (["train", "--run-dir", "{tmp}/r"], "missing CORPUS"),
    (["train", "--resume", "{tmp}/none"], "nothing to resume in"),
    (["sample", "{run}", "--temperature", "-1"], "--temperature must be >= 0"),
    (["sample", "{run}", "--top-p", "0"], "--top-p must be in (0, 1]"),
    (["sample", "{run}", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["sample", "{run}", "--top-k", "-2"], "--top-k must be >= 1"),
    (["sample", "{run}", "--length", "-5"], "--length must be >= 0"),
    (["sample", "{run}", "--prime", "日本"], "2 character(s) not in the model's vocabulary: '日', '本'"),
    (["sample", "{tmp}/missing.pt"], "checkpoint not found"),
    (["sample", "{tmp}"], "holds no checkpoints/best.pt"),
    (["eval", "{run}", "{tmp}/missing.txt"], "file not found"),
    (["info", "{tmp}/garbage.pt"], "is not a readable checkpoint"),
])
def test_bad_input_is_one_clear_line(tmp_path, tiny_run, corpus_file, args, message):
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 100)
    fill = {"tmp": tmp_path, "run": tiny_run, "corpus": corpus_file}
    line = one_line_error(cli(*[a.format(**fill) for a in args]))
    assert message in line
    assert not (tmp_path / "r").exists()  # no half-written run dir


def test_cuda_on_a_machine_without_it(tmp_path, tiny_run, corpus_file):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = one_line_error(cli("sample", tiny_run, "--device", "cuda"))
    assert "CUDA is not available on this machine" in line
    line = one_line_error(cli("train", corpus_file, "--run-dir", tmp_path / "r", "--device", "cuda"))
    assert "CUDA is not available" in line
    assert not (tmp_path / "r").exists()


def test_refuses_a_pickled_object_checkpoint(tmp_path):
    torch.save({"format_version": 1, "x": torch.nn.Linear(2, 2)}, tmp_path / "evil.pt")
    assert "holds objects other than tensors" in one_line_error(cli("info", tmp_path / "evil.pt"))


def test_refuses_an_unknown_format_version(tmp_path):
    torch.save({"format_version": 3, "config": {}}, tmp_path / "future.pt")
    assert "checkpoint format 3; this charrnn reads formats 1, 2" in one_line_error(cli("info", tmp_path / "future.pt"))


def test_existing_run_dir_is_refused_through_the_cli(tiny_run, corpus_file):
    before = (tiny_run / "checkpoints" / "last.pt").read_bytes()
    line = one_line_error(cli("train", corpus_file, "--run-dir", tiny_run, "--config", ROOT / "configs" / "tiny.toml"))
    assert "already holds a run" in line
    assert (tiny_run / "checkpoints" / "last.pt").read_bytes() == before


def test_raw_bytes_corpus_trains_and_samples_bytes(tmp_path):
    data = bytes(range(256)) * 40 + b"\x00\xff binary \r\n" * 200
    (tmp_path / "blob.bin").write_bytes(data)
    invoke("train", tmp_path / "blob.bin", "--run-dir", tmp_path / "r", "--config", ROOT / "configs" / "tiny.toml",
            "--encoding", "bytes", "--max-steps", 5, "--device", "cpu")
    out = invoke("sample", tmp_path / "r", "--length", 100, "--seed", 0, "--prime", "").stdout
    assert len(out) == 101  # 100 raw bytes and a newline, whatever their values
    assert "256 bytes" in invoke("info", tmp_path / "r").stdout.decode()


def test_binary_file_without_bytes_encoding_is_refused(tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    line = one_line_error(cli("train", tmp_path / "blob.bin", "--run-dir", tmp_path / "r"))
    assert "NUL bytes" in line
    assert "--encoding bytes" in line
    assert not (tmp_path / "r").exists()


def hostile(tmp: Path) -> dict:
    """Ordinary but hostile files and dirs, made fresh for each case."""
    (tmp / "loop").symlink_to(tmp / "loop")
    os.mkfifo(tmp / "fifo")
    (tmp / "dir").mkdir()
    (tmp / "blocker").write_text("a file")
    (tmp / "ascii.txt").write_text("plain ascii text\n" * 20)
    (tmp / "snow.txt").write_text("☃" * 100)
    return {"tmp": tmp}


@pytest.mark.parametrize("args, message", [
    (["train", "{tmp}/loop", "--run-dir", "{tmp}/r"], "Too many levels of symbolic links"),
    (["train", "{tmp}/fifo", "--run-dir", "{tmp}/r"], "is neither a regular file nor a directory"),
    (["train", "{tmp}/ascii.txt", "--run-dir", "{tmp}/blocker/r"], "cannot create the run dir"),
    (["train", "{tmp}/ascii.txt", "--run-dir", "{tmp}/r", "--config", "{tmp}/dir"], "is a directory"),
    (["train", "{tmp}/ascii.txt", "--run-dir", "{tmp}/r", "--config", "{tmp}/fifo"], "is not a regular file"),
    (["train", "{tmp}/ascii.txt", "--run-dir", "{tmp}/r", "--encoding", "base64"], "'base64' is not a text encoding"),
    (["train", "{tmp}/ascii.txt", "--run-dir", "{tmp}/r", "--encoding", "zlib"], "'zlib' is not a text encoding"),
    (["train", "{tmp}/ascii.txt", "--run-dir", "{tmp}/r", "--encoding", "hex"], "'hex' is not a text encoding"),
    (["train", "{tmp}/ascii.txt", "--run-dir", "{tmp}/r", "--encoding", "rot13"], "'rot13' is not a text encoding"),
    (["train", "{tmp}/ascii.txt", "--run-dir", "{tmp}/r", "--encoding", "undefined"], "cannot be decoded as undefined"),
    (["train", "{tmp}/ascii.txt", "--run-dir", "{tmp}/r", "--set", "model.num_layers=100000000"], "GiB to train"),
    (["train", "{tmp}/ascii.txt", "--run-dir", "{tmp}/r", "--set", "model.hidden_size=100000"], "GiB to train"),
    (["train", "{tmp}/ascii.txt", "--run-dir", "{tmp}/r", "--set", "model.embed_dim=1e11"], "must be an integer"),
    (["eval", "{run}", "{tmp}/dir"], "is a directory"),
    (["eval", "{run}", "{tmp}/fifo"], "is not a regular file"),
    (["eval", "{run}", "{tmp}/snow.txt"], "has no characters the model knows (100 skipped"),
    (["info", "{tmp}/fifo"], "is not a regular file"),
])
def test_hostile_inputs_are_one_clear_line(tmp_path, tiny_run, args, message):
    fill = {**hostile(tmp_path), "run": tiny_run}
    line = one_line_error(cli(*[a.format(**fill) for a in args]))
    assert message in line
    assert not (tmp_path / "r").exists()


def test_an_undecodable_corpus_path_is_one_clear_line(tmp_path):
    path = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.txt")
    Path(path).write_text("some text\n" * 50)
    line = one_line_error(cli("train", path, "--run-dir", tmp_path / "r"))
    assert "is not valid UTF-8" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # the TOML round trip of such paths is tested fast in test_config
def test_an_emoji_corpus_path_trains_and_resumes(tmp_path, corpus_file):
    path = tmp_path / "poems 😀 \"quoted\".txt"
    path.write_text(corpus_file.read_text())
    invoke("train", path, "--run-dir", tmp_path / "r", "--config", TINY_CONFIG, "--max-steps", 3, "--device", "cpu")
    invoke("train", "--resume", tmp_path / "r", "--max-steps", 6)
    assert "step:        6" in invoke("info", tmp_path / "r").stdout.decode()


def test_data_path_may_come_from_the_config_file(tmp_path, corpus_file):
    config = tmp_path / "c.toml"
    config.write_text(TINY_CONFIG.read_text() + f"\n[data]\npath = {json.dumps(str(corpus_file))}\n")
    invoke("train", "--run-dir", tmp_path / "r", "--config", config, "--max-steps", 2, "--device", "cpu")
    assert (tmp_path / "r" / "checkpoints" / "last.pt").exists()


def test_full_or_closed_output_streams(tmp_path, tiny_run, corpus_file):
    with open("/dev/full", "wb") as full:
        result = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(tiny_run), "-n", "5000"], cwd=ROOT,
                                stdout=full, stderr=subprocess.PIPE)
        assert result.returncode == 1
        assert b"No space left on device" in result.stderr
        assert b"Traceback" not in result.stderr
        trained = subprocess.run([sys.executable, "-m", "charrnn", "train", str(corpus_file), "--run-dir",
                                  str(tmp_path / "r"), "--config", str(TINY_CONFIG), "--device", "cpu",
                                  "--max-steps", "5"], stderr=full, stdout=subprocess.DEVNULL, cwd=ROOT)
    assert trained.returncode == 0
    assert (tmp_path / "r" / "checkpoints" / "last.pt").exists()


def test_a_tiny_temperature_is_greedy_not_nan(tiny_run):
    cold = invoke("sample", tiny_run, "-n", 60, "--temperature", "1e-45", "--seed", 1).stdout
    greedy = invoke("sample", tiny_run, "-n", 60, "--temperature", "0").stdout
    assert cold == greedy


def test_a_gru_run_through_the_cli_samples_evaluates_and_shows_its_cell(tmp_path, corpus_file):
    invoke("train", corpus_file, "--run-dir", tmp_path / "r", "--config", TINY_CONFIG, "--max-steps", 6,
            "--set", "model.cell=gru", "--device", "cpu")
    assert "cell:        gru (2 x 64)" in invoke("info", tmp_path / "r").stdout.decode()
    assert len(invoke("sample", tmp_path / "r", "-n", 40, "--seed", 0).stdout.decode()) == 41
    assert json.loads(invoke("eval", tmp_path / "r", corpus_file, "--json").stdout)["loss"] > 0


def test_a_preset_by_name_and_a_duration(tmp_path, corpus_file):
    invoke("train", corpus_file, "--run-dir", tmp_path / "r", "--config", "tiny", "--time-budget", "1m",
            "--max-steps", 3, "--device", "cpu")
    config = (tmp_path / "r" / "config.toml").read_text()
    assert "time_budget = 60.0" in config
    assert "hidden_size = 64" in config  # the tiny preset's
    refused = invoke("train", corpus_file, "--run-dir", tmp_path / "s", "--time-budget", "10x", check=False)
    assert refused.returncode == 2
    assert "'--time-budget': '10x' is not a duration such as 90, 90s, 10m or 1h30m" in refused.stderr.decode()


def test_an_unforeseen_file_error_names_the_file_not_the_output(tiny_run, monkeypatch):
    import charrnn.checkpoint

    def gone(path):  # e.g. a file another process removed a moment after it was checked
        raise FileNotFoundError(2, "No such file or directory", "/cache/entry/ids.npy")

    monkeypatch.setattr(charrnn.checkpoint, "describe", gone)
    result = invoke("info", tiny_run, check=False)
    assert result.returncode == 1
    assert result.stderr.decode() == "Error: /cache/entry/ids.npy: No such file or directory\n"
