"""Every number a user can type, at its absurd ends: zero, negative, past 2**63, NaN and inf.

Each command's every numeric option, and every config key through --set, either works or gets one
line that names it, with a non-zero exit: never a traceback, never a hang.
"""

import math
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import charrnn
from charrnn.cli import main
from charrnn.config import reference
from charrnn.errors import UserError
from charrnn.generation.interactive import Settings, command
from tests.helpers import ROOT, TINY_CONFIG, last

ABSURD = ["0", "-1", str(2**64), "nan", "inf", "-inf"]


def check(result, *names: str) -> None:
    """Worked, or failed with one 'Error:' line that names one of `names`; never a traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    output = result.output
    assert "Traceback" not in output
    if result.exit_code == 0:
        return
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, output
    diverged = "stopped. " in errors[0] and "lower lr" in errors[0]  # a huge lr or decay: the run says so, saved
    assert diverged or any(name in output for name in names), output


@pytest.fixture(scope="module")
def small_text(tmp_path_factory, corpus_file):
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text(corpus_file.read_text()[:1500])
    return path


@pytest.mark.parametrize("value", ABSURD)
@pytest.mark.parametrize("option", ["--length", "--temperature", "--top-k", "--top-p", "--seed", "--num-samples",
                                    "--beam-width"])
def test_sample_options(tiny_run, option, value):
    args = ["sample", str(tiny_run), "-n", "5", option, value]
    if option in ("--length", "--beam-width"):
        args = ["sample", str(tiny_run), option, value] + (["-n", "5"] if option == "--beam-width" else [])
    check(CliRunner().invoke(main, args), option)


@pytest.mark.parametrize("value", ABSURD)
@pytest.mark.parametrize("option", ["--streams", "--segment-len", "--dynamic-lr", "--decay"])
def test_eval_options(tiny_run, small_text, option, value):
    dynamic = ["--dynamic"] if option != "--streams" else []
    check(CliRunner().invoke(main, ["eval", str(tiny_run), str(small_text), *dynamic, option, value]), option)


@pytest.mark.parametrize("value", ABSURD)
@pytest.mark.parametrize("option", ["--chars", "--offset"])
def test_visualize_options(tiny_run, small_text, tmp_path, option, value):
    args = ["visualize", str(tiny_run), str(small_text), "--out", str(tmp_path / "v.html"), "--chars", "400"]
    check(CliRunner().invoke(main, [*args, option, value]), option)


@pytest.mark.parametrize("value", ABSURD)
@pytest.mark.parametrize("option", ["--batch-size", "--seq-len", "--steps", "--rounds", "--sample-length"])
def test_bench_options(option, value):
    # Every value here is refused before anything is measured, so nothing is timed.
    check(CliRunner().invoke(main, ["bench", option, value]), option)


@pytest.mark.parametrize("shapes", ["0x0", "-1x8", f"2x{2**64}", "nanxinf", "2x", "x"])
def test_bench_shapes(shapes):
    result = CliRunner().invoke(main, ["bench", "--shapes", shapes])
    check(result, "--shapes")
    assert result.exit_code != 0


@pytest.mark.parametrize("value", ABSURD)
@pytest.mark.parametrize("option", ["--max-steps", "--max-epochs", "--time-budget", "--seed"])
def test_train_options(tmp_path, corpus_file, option, value):
    args = ["train", str(corpus_file), "--run-dir", str(tmp_path / "r"), "--config", str(TINY_CONFIG),
            "--device", "cpu", "--max-steps", "2", option, value]
    check(CliRunner().invoke(main, args), option)


KEYS = [key for key, _, _ in reference() if key != "data.path"]


@pytest.mark.parametrize("value", ABSURD)
@pytest.mark.parametrize("key", KEYS)
def test_every_config_key(tmp_path, corpus_file, key, value):
    args = ["train", str(corpus_file), "--run-dir", str(tmp_path / "r"), "--config", str(TINY_CONFIG),
            "--device", "cpu", "--max-steps", "2", "--set", "train.eval_chars=500", "--set", f"{key}={value}"]
    if key == "train.max_steps":
        args.remove("--max-steps")
        args.remove("2")
    check(CliRunner().invoke(main, args), key)


@pytest.mark.parametrize("kwargs", [{"temperature": math.inf}, {"temperature": math.nan}, {"top_p": math.nan},
                                    {"top_p": math.inf}, {"length": 2**64}, {"top_k": 2**64}, {"seed": 2**64},
                                    {"seed": -1}])
def test_the_api_refuses_non_finite_and_huge_options(tiny_run, kwargs):
    model = charrnn.load(tiny_run, "cpu")
    with pytest.raises(UserError, match="--" + next(iter(kwargs)).replace("_", "-")):
        model.generate(**{"length": 5, **kwargs})


@pytest.mark.parametrize("line", [":t inf", ":t nan", ":p inf", ":n " + str(2**64), ":k " + str(2**64)])
def test_interactive_settings_refuse_non_finite_and_huge(line):
    settings = Settings(length=100)
    new, message = command(settings, line)
    assert new == settings
    assert message.startswith("error:")


def test_sighup_saves_and_exits_129(tmp_path, corpus_file):
    run_dir = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(corpus_file), "--run-dir", str(run_dir),
                             "--config", str(TINY_CONFIG), "--device", "cpu", "--max-steps", "100000"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "metrics.jsonl").exists():  # training has started
            assert proc.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 129, err.decode()
    assert f"SIGHUP: saved step {last(run_dir).run.step}" in err.decode()
