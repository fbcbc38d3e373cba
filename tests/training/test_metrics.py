"""The metrics sinks: metrics.jsonl (truncated to the checkpoint on resume) beside TensorBoard; a null logger."""

import json

from charrnn.training.metrics import MetricsLogger, NullLogger


def test_logger_writes_jsonl_and_resume_drops_what_came_after_the_checkpoint(tmp_path):
    logger = MetricsLogger(tmp_path)
    for step in (5, 10, 15):
        logger.log(step, {"train/loss": step / 10})
    logger.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 20, "train/lo')  # a torn line from a hard kill
    resumed = MetricsLogger(tmp_path, resume_step=10)
    resumed.log(15, {"train/loss": 9.0})
    resumed.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"step": 5, "train/loss": 0.5}, {"step": 10, "train/loss": 1.0}, {"step": 15, "train/loss": 9.0}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "tb"]


def test_null_logger_writes_nothing(tmp_path):
    logger = NullLogger()
    logger.log(1, {"a": 1.0})
    logger.text(1, "samples", "x")
    logger.close()
    assert not list(tmp_path.iterdir())
