"""Training metrics: TensorBoard events under tb/ and one JSON object per logged step in metrics.jsonl."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def bpc(nats: float) -> float:
    """Nats per character -> bits per character."""
    return nats / math.log(2)


class MetricsLogger:
    """Writes scalars and text samples; on resume it first drops everything logged after `resume_step`."""

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when a run starts

        self.jsonl_path = Path(run_dir) / "metrics.jsonl"
        if resume_step is not None:
            _truncate_jsonl(self.jsonl_path, resume_step)
        purge = None if resume_step is None else resume_step + 1
        self.tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=purge)
        self.jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """One JSON line and one TensorBoard scalar per value, all for `step`."""
        for tag, value in scalars.items():
            self.tb.add_scalar(tag, value, step)
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self.jsonl.flush()

    def text(self, step: int, tag: str, text: str) -> None:
        # Indented lines render as preformatted text in TensorBoard's markdown view.
        self.tb.add_text(tag, "\n".join("    " + line for line in text.split("\n")), step)

    def close(self) -> None:
        self.tb.close()
        self.jsonl.close()


def _truncate_jsonl(path: Path, last_step: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if _step_of(line) is not None and _step_of(line) <= last_step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)


def _step_of(line: str) -> Any:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line from a hard kill


class NullLogger:
    """What processes other than the main one log to: nothing."""

    def log(self, step: int, scalars: dict[str, float]) -> None:
        pass

    def text(self, step: int, tag: str, text: str) -> None:
        pass

    def close(self) -> None:
        pass
