"""The training loop end to end, in process: reproducible runs, metrics, resumes bitwise, stops of every kind."""

import json
import math
import shutil
import signal

import numpy as np
import pytest
import torch

import charrnn.model as net
from charrnn.checkpoint import load_run
from charrnn.config import load_config
from charrnn.data.encoding import load_data
from charrnn.data.split import split_of
from charrnn.devices import _cpu_runs_bf16
from charrnn.errors import UserError
from charrnn.training import loop, throughput
from charrnn.training.loop import train
from charrnn.training.stopping import Stopped
from tests.helpers import fast_config, last, read_run, resume, steps_logged


def weights(run_dir, name="last.pt"):
    return load_run(run_dir / "checkpoints" / name).model


def interrupt_after(monkeypatch, step):
    """Deliver a real SIGINT to this process while training step `step` runs."""
    original = loop.train_step

    def step_then_signal(parts, tc, state, hidden, ctx):
        out = original(parts, tc, state, hidden, ctx)
        if state.step + 1 == step:  # the loop counts this step when it returns
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(loop, "train_step", step_then_signal)


def assert_resumes_bitwise(cfg, tmp_path, monkeypatch, stop_at=13):
    """Train `cfg` whole, and interrupted at `stop_at` then resumed: the same weights and best val. The whole run."""
    full = train(cfg, tmp_path / "full")
    with monkeypatch.context() as m:
        interrupt_after(m, stop_at)
        assert train(cfg, tmp_path / "split").interrupted
    resumed = resume(tmp_path / "split")
    a, b = weights(tmp_path / "full"), weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best_val_loss == full.best_val_loss
    return full


def test_same_seed_same_run(tmp_path, corpus_file):
    train(fast_config(corpus_file), tmp_path / "a")
    train(fast_config(corpus_file), tmp_path / "b")
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train(fast_config(corpus_file, "train.seed=7"), tmp_path / "c")
    assert not torch.equal(weights(tmp_path / "c")["head.weight"], a["head.weight"])
    assert c.step == 40


def test_run_dir_contents_and_metrics(tmp_path, corpus_file):
    result = train(fast_config(corpus_file), tmp_path / "r")
    run = tmp_path / "r"
    assert (run / "config.toml").is_file()
    assert (run / "checkpoints" / "best.pt").is_file()
    assert load_config(run / "config.toml") == fast_config(corpus_file, "data.split='tail'")  # auto, resolved
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(5, 41, 5))
    train_keys = {"train/loss", "train/bpc", "train/lr", "train/grad_norm", "train/grad_norm_max",
                  "train/clip_frac", "train/chars_per_sec"}
    assert all(train_keys <= r.keys() for r in records)
    assert [r["step"] for r in records if "val/loss" in r] == [10, 20, 30, 40]
    last = records[-1]
    assert last["val/bpc"] == pytest.approx(last["val/loss"] / math.log(2))
    assert result.val_loss == pytest.approx(last["val/loss"])
    assert result.best_val_loss == min(r["val/loss"] for r in records if "val/loss" in r)
    assert read_run(run / "checkpoints" / "best.pt").run.best_val_loss == result.best_val_loss


def test_tensorboard_has_the_scalars_and_samples(tmp_path, corpus_file):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(fast_config(corpus_file), tmp_path / "r")
    events = EventAccumulator(str(tmp_path / "r" / "tb")).Reload()
    assert {"train/loss", "train/bpc", "val/loss", "val/bpc", "train/lr", "train/grad_norm",
            "train/chars_per_sec"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Tensors("samples/text_summary")] == [20, 40]


@pytest.mark.parametrize("stop_at", [7, 10, 18, 33])  # mid-epoch, right after an eval, an epoch boundary, late
def test_interrupted_then_resumed_run_is_bitwise_identical(tmp_path, corpus_file, monkeypatch, stop_at):
    cfg = fast_config(corpus_file)
    full = train(cfg, tmp_path / "full")
    with monkeypatch.context() as m:
        interrupt_after(m, stop_at)
        first = train(cfg, tmp_path / "split")
    assert first.stopped_by == "SIGINT"
    assert first.step == stop_at
    assert last(tmp_path / "split").run.step == stop_at
    resumed = resume(tmp_path / "split")
    a, b = weights(tmp_path / "full"), weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best_val_loss == full.best_val_loss
    assert resumed.step == full.step
    assert steps_logged(tmp_path / "split") == steps_logged(tmp_path / "full")


def test_a_signal_before_the_first_step_saves_step_0_and_resumes_bitwise(tmp_path, corpus_file, monkeypatch):
    cfg = fast_config(corpus_file)
    full = train(cfg, tmp_path / "full")
    original, said = loop.build, []

    def build_then_signal(*args, **kwargs):
        parts = original(*args, **kwargs)
        signal.raise_signal(signal.SIGINT)  # arrives after the run dir is made, before any step
        return parts

    with monkeypatch.context() as m:
        m.setattr(loop, "build", build_then_signal)
        first = train(cfg, tmp_path / "split", echo=said.append)
    assert (first.stopped_by, first.step) == ("SIGINT", 0)
    assert last(tmp_path / "split").run.step == 0
    assert any(line.startswith("SIGINT: saved step 0 to ") for line in said)
    resumed = resume(tmp_path / "split")
    a, b = weights(tmp_path / "full"), weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best_val_loss == full.best_val_loss


def test_resume_after_a_crash_drops_metrics_logged_past_the_checkpoint(tmp_path, corpus_file):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = fast_config(corpus_file, "train.max_steps=20", "train.checkpoint_every=10", "train.keep_last=2")
    train(cfg, tmp_path / "r")
    shutil.copy(tmp_path / "r" / "checkpoints" / "step-00000010.pt", tmp_path / "r" / "checkpoints" / "last.pt")
    resume(tmp_path / "r")  # as if killed right after the save at step 10, with metrics logged up to 20
    assert steps_logged(tmp_path / "r") == [5, 10, 15, 20]
    events = EventAccumulator(str(tmp_path / "r" / "tb")).Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == [5, 10, 15, 20]  # TensorBoard purged the orphaned 15 and 20 logged before the "crash"


def test_existing_run_is_never_overwritten_without_consent(tmp_path, corpus_file):
    train(fast_config(corpus_file, "train.max_steps=10"), tmp_path / "r")
    before = (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(UserError, match="already holds a run: pass --resume .* or --overwrite"):
        train(fast_config(corpus_file, "train.max_steps=20"), tmp_path / "r")
    assert (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes() == before
    (tmp_path / "r" / "notes.txt").write_text("mine")
    assert train(fast_config(corpus_file, "train.max_steps=20"), tmp_path / "r", overwrite=True).step == 20
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    assert steps_logged(tmp_path / "r")[-1] == 20
    assert steps_logged(tmp_path / "r")[0] == 5


def test_nan_loss_stops_cleanly_keeping_the_last_good_checkpoint(tmp_path, corpus_file, monkeypatch):
    real = net.cross_entropy
    calls = {"n": 0}

    def poisoned(logits, targets, reduction="mean"):
        loss = real(logits, targets, reduction)
        if not torch.is_grad_enabled():  # a validation's
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 14 else loss  # the 14th training step

    monkeypatch.setattr(net, "cross_entropy", poisoned)
    with pytest.raises(UserError, match=r"the loss became nan at step 14; stopped.*--resume .* --set train.lr="):
        train(fast_config(corpus_file, "train.eval_every=100"), tmp_path / "r")
    monkeypatch.undo()
    saved = last(tmp_path / "r")
    assert saved.run.step == 10
    assert all(t.isfinite().all() for t in saved.model.values())
    result = resume(tmp_path / "r", ["train.lr=1e-3"])
    assert result.step == 40
    assert math.isfinite(result.val_loss)


def test_tiny_corpus_shrinks_the_batch_with_a_warning(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("to be or not to be, that is the question. " * 4)
    messages = []
    result = train(fast_config(corpus, "train.max_steps=5"), tmp_path / "r", echo=messages.append)
    assert result.step == 5
    assert any("train split has only" in m for m in messages)
    assert not any("validation split" in m for m in messages)  # it is scored whole, in fewer of its fixed streams
    messages.clear()
    train(fast_config(corpus, "train.max_steps=5", "train.eval_streams=0"), tmp_path / "r0", echo=messages.append)
    assert any("validation split has only" in m for m in messages)  # the batch's streams, shrunk, as it always was


def test_too_small_corpus_is_refused_before_creating_the_run_dir(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("tiny text")
    with pytest.raises(UserError, match="too few to train or evaluate on"):
        train(fast_config(corpus), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_time_budget_stops_the_run_and_tells_the_planner_what_its_loop_made(tmp_path, corpus_file, monkeypatch):
    learnt = []
    monkeypatch.setattr(loop, "learn_loop", lambda *args: learnt.append(args))
    cfg = fast_config(corpus_file, "train.max_steps=100000", "train.time_budget=2.0")
    result = train(cfg, tmp_path / "r")
    assert result.stopped_by == "time_budget"
    assert 0 < result.step < 100000
    # its steps in the budget's seconds, for its shape: the share of the trial's speed it kept (throughput.py)
    (precision, model, _, batch, seq_len, device, steps, seconds), = learnt
    assert (precision, model, batch, seq_len, device.type) == ("fp32", cfg.model, cfg.train.batch_size,
                                                                cfg.train.seq_len, "cpu")
    assert (steps, seconds) == (result.step, 2.0)
    train(fast_config(corpus_file, "train.max_steps=3", "train.time_budget=60"), tmp_path / "s")
    assert len(learnt) == 1  # a run that stopped short of its budget says nothing of its loop's speed


def test_max_epochs_stops_the_run(tmp_path, corpus_file):
    result = train(fast_config(corpus_file, "train.max_steps=100000", "train.max_epochs=1"), tmp_path / "r")
    assert result.stopped_by == "max_epochs"
    saved = last(tmp_path / "r")
    assert (saved.run.epoch, saved.run.window) == (1, 0)


def test_cuda_without_cuda_is_a_clear_error(tmp_path, corpus_file):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="CUDA is not available on this machine"):
        train(fast_config(corpus_file, "train.device='cuda'"), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def spy_evaluations(monkeypatch) -> list[int]:
    """The number of characters each validation of the run scores."""
    scored = []
    real = loop.evaluate

    def spy(*args, **kwargs):
        loss, chars = real(*args, **kwargs)
        scored.append(chars)
        return loss, chars

    monkeypatch.setattr(loop, "evaluate", spy)
    return scored


def test_validation_is_capped_by_eval_chars_and_the_final_one_matches(tmp_path, corpus_file, monkeypatch):
    scored = spy_evaluations(monkeypatch)
    cfg = fast_config(corpus_file, "train.max_steps=20", "train.eval_chars=1000", "data.val_fraction=0.5")
    train(cfg, tmp_path / "r")
    assert scored == [32 * 100] * 2  # one window of each of the 32 streams, periodic and final: ceil(1000 / 3200)


def test_a_small_validation_split_is_scored_whole_by_default(tmp_path, corpus_file, monkeypatch):
    scored = spy_evaluations(monkeypatch)
    train(fast_config(corpus_file, "train.max_steps=10"), tmp_path / "r")
    val_chars = len(corpus_file.read_text()) - int(len(corpus_file.read_text()) * 0.9)
    assert scored
    assert all(val_chars - 16 <= n < val_chars for n in scored)  # all but the ragged tail (< B)


def test_a_signal_during_validation_abandons_it_unrecorded_and_saves_the_last_step(tmp_path, corpus_file,
                                                                                   monkeypatch):
    real = loop.evaluate

    def signal_then_evaluate(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)  # arrives as the validation starts
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", signal_then_evaluate)
    result = train(fast_config(corpus_file), tmp_path / "r")
    assert result.interrupted
    assert result.stopped_by == "SIGTERM"
    assert result.step == 10
    assert result.val_loss is None
    assert last(tmp_path / "r").run.step == 10
    assert last(tmp_path / "r").run.val_loss is None
    assert not any("val/loss" in line for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines())
    assert not (tmp_path / "r" / "checkpoints" / "best.pt").exists()


def test_a_signal_while_encoding_stops_before_anything_is_written(tmp_path, corpus_file, monkeypatch):
    from charrnn.data import cache, encoding

    real = encoding._Alphabet.add

    def signal_then_add(self, piece):
        signal.raise_signal(signal.SIGTERM)
        real(self, piece)

    monkeypatch.setattr(encoding._Alphabet, "add", signal_then_add)
    fresh = tmp_path / "fresh.txt"
    fresh.write_text("a corpus no test has cached yet\n" * 500)
    with pytest.raises(Stopped, match="SIGTERM"):
        train(fast_config(fresh), tmp_path / "r")
    assert not (tmp_path / "r").exists()
    assert not [p for p in cache.cache_dir().iterdir() if p.name.startswith(".")]  # no temp dir left


def test_include_filters_that_leave_nothing_are_refused_before_the_run_dir_exists(tmp_path, corpus_file):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("print('hi')\n" * 100)
    with pytest.raises(UserError, match="holds no files to train on after data.include"):
        train(fast_config(tmp_path / "src", "data.include=['*.c']"), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_run_dir_inside_its_directory_corpus_is_left_out_and_resumes(tmp_path, corpus_file):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text(corpus_file.read_text())
    messages = []
    train(fast_config(src, "train.max_steps=10"), src / "runs" / "x", echo=messages.append)
    result = resume(src / "runs" / "x", ["train.max_steps=20"], echo=messages.append)
    assert result.step == 20  # the run's own config.toml and metrics never became part of the corpus
    assert any("left out 1 charrnn run dir(s) inside the corpus: runs/x" in m for m in messages)


def test_nan_before_any_checkpoint_says_none_was_written(tmp_path, corpus_file, monkeypatch):
    real = net.cross_entropy
    monkeypatch.setattr(net, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(UserError, match=r"the loss became nan at step 1; stopped. No checkpoint was written yet: "
                                        r"start again with a lower lr, e.g. --set train.lr="):
        train(fast_config(corpus_file), tmp_path / "r")


def test_sigterm_during_the_final_evaluation_is_an_interruption(tmp_path, corpus_file, monkeypatch):
    real = loop.evaluate

    def signal_then_evaluate(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", signal_then_evaluate)
    result = train(fast_config(corpus_file, "train.max_steps=12", "train.eval_every=100"), tmp_path / "r")
    assert result.interrupted
    assert result.stopped_by == "SIGTERM"
    assert result.step == 12
    assert last(tmp_path / "r").run.step == 12  # saved, so a resume would evaluate and finish


@pytest.mark.parametrize("cell", ["gru", pytest.param("rnn", marks=pytest.mark.slow)])
def test_every_cell_trains_and_resumes_bitwise(tmp_path, corpus_file, monkeypatch, cell):
    cfg = fast_config(corpus_file, f"model.cell='{cell}'", "train.max_steps=20")
    assert_resumes_bitwise(cfg, tmp_path, monkeypatch)
    assert load_run(tmp_path / "full" / "checkpoints" / "last.pt").config.model.cell == cell
    assert len(last(tmp_path / "full").run.hidden) == 1  # h only: no cell state


def test_weight_dropout_trains_and_resumes_bitwise(tmp_path, corpus_file, monkeypatch):
    full = assert_resumes_bitwise(fast_config(corpus_file, "model.weight_dropout=0.3"), tmp_path, monkeypatch)
    plain = train(fast_config(corpus_file), tmp_path / "plain")
    assert full.best_val_loss != plain.best_val_loss  # the masks changed the run


def test_bf16_on_cpu_tracks_fp32_carries_fp32_state_and_resumes_bitwise(tmp_path, corpus_file, monkeypatch):
    if not _cpu_runs_bf16("lstm"):
        pytest.skip("this CPU's oneDNN has no bf16 LSTM kernel (test_bf16_without_a_cpu_kernel_is_one_line covers it)")
    fp32 = train(fast_config(corpus_file), tmp_path / "fp32")
    full = assert_resumes_bitwise(fast_config(corpus_file, "train.precision='bf16'"), tmp_path, monkeypatch)
    assert abs(full.best_val_loss - fp32.best_val_loss) < 0.05
    assert all(t.dtype == torch.float32 for t in last(tmp_path / "full").run.hidden)


def test_bf16_without_a_cpu_kernel_is_one_line(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setattr("charrnn.devices._cpu_runs_bf16", lambda cell: False)  # as on a CPU without AVX-512 BF16
    with pytest.raises(UserError, match="this CPU cannot run the fused LSTM in bf16"):
        train(fast_config(corpus_file, "train.precision='bf16'"), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_fp16_on_cpu_is_a_clear_error(tmp_path, corpus_file):
    with pytest.raises(UserError, match="train.precision fp16 needs CUDA; use bf16 or fp32 on cpu"):
        train(fast_config(corpus_file, "train.precision='fp16'"), tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("bf16_speed, expected", [(0.6, "fp32"), (1.8, "bf16"), (1.02, "fp32")])
def test_auto_precision_on_a_cpu_trains_in_the_faster_as_measured(tmp_path, corpus_file, monkeypatch, bf16_speed,
                                                                   expected):
    if expected == "bf16" and not _cpu_runs_bf16("gru"):
        pytest.skip("this CPU has no bf16 GRU kernel to train with")
    monkeypatch.setattr("charrnn.devices._cpu_runs_bf16", lambda cell: True)  # so that auto measures
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "cache"))  # throughput.json lives there
    timed = []

    def seconds(precision, *args):
        timed.append(precision)
        return 1.0 if precision == "fp32" else 1.0 / bf16_speed

    monkeypatch.setattr(throughput, "seconds_per_step", seconds)
    auto = fast_config(corpus_file, "train.precision='auto'", "train.max_steps=10", "model.cell='gru'")
    for name in ("auto", "again"):
        messages = []
        train(auto, tmp_path / name, echo=messages.append)
        how = "measured" if name == "auto" else "cached"
        assert f"train.precision auto: {expected} on cpu ({how}: bf16 trains this shape at {bf16_speed:.2f}x " \
               "fp32's speed)" in messages
    assert timed == ["fp32", "bf16"]  # measured once; the second run of the same shape read the cache
    train(fast_config(corpus_file, f"train.precision='{expected}'", "train.max_steps=10", "model.cell='gru'"),
          tmp_path / expected)
    a, b = weights(tmp_path / "auto"), weights(tmp_path / expected)
    assert all(torch.equal(a[k], b[k]) for k in a)  # it trained exactly as the precision it picked


def test_a_directory_corpus_trains_on_the_hash_split_records_it_and_resumes_bitwise(tmp_path, monkeypatch):
    from tests.data.test_split import two_kinds

    tree = two_kinds(tmp_path / "tree", files=10)
    assert_resumes_bitwise(fast_config(tree, "train.max_steps=20"), tmp_path, monkeypatch)
    assert load_config(tmp_path / "full" / "config.toml").data.split == "hash"
    assert last(tmp_path / "split").config.data.split == "hash"


def test_a_run_from_before_data_split_resumes_on_the_tail_it_was_trained_with(tmp_path, monkeypatch):
    from tests.data.test_split import two_kinds

    tree = two_kinds(tmp_path / "tree", files=10)
    cfg = fast_config(tree, "train.max_steps=20", "data.split='tail'")
    full = train(cfg, tmp_path / "full")
    with monkeypatch.context() as m:
        interrupt_after(m, 13)
        train(cfg, tmp_path / "old")
    path = tmp_path / "old" / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["data"]["split"]  # as charrnn 0.2.0 saved it
    torch.save(state, path)
    resumed = resume(tmp_path / "old")
    a, b = weights(tmp_path / "full"), weights(tmp_path / "old")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best_val_loss == full.best_val_loss


def test_an_adaptive_head_trains_resumes_bitwise_and_ranks_the_training_texts_symbols(tmp_path, corpus_file,
                                                                                      monkeypatch):
    cfg = fast_config(corpus_file, "model.head_cutoff=20")
    full = assert_resumes_bitwise(cfg, tmp_path, monkeypatch)
    assert math.isfinite(full.best_val_loss)
    saved = read_run(tmp_path / "full" / "checkpoints" / "last.pt")
    corpus = load_data(cfg.data)
    counts = np.bincount(split_of(corpus, cfg.data).train, minlength=corpus.vocab.size)
    order = sorted(range(corpus.vocab.size), key=lambda i: (-counts[i], i))  # most frequent first, ties by id
    assert [order.index(i) for i in range(corpus.vocab.size)] == saved.model["rank"].tolist()
    assert saved.vocab.chars[order[0]] == " " and counts[order[20:]].sum() > 0  # the rare cluster had some to learn
    assert saved.model["tail.1.weight"].shape == (saved.vocab.size - 20, 32 // 4)
