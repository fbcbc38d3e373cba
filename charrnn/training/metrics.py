"""Training metrics: TensorBoard events under tb/ and one JSON object per logged step in metrics.jsonl.

A metrics sink that fails (a full disk, a vanished directory) is reported once and then left
alone: losing a log line must never stop a run before it saves its checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charrnn.files import describe_os_error, write_atomic


class MetricsLogger:
    """Writes scalars and text samples; on resume it first drops everything logged after `resume_step`."""

    def __init__(self, run_dir: Path, resume_step: int | None = None,
                 warn: Callable[[str], None] = lambda s: None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when a run starts

        self._warn, self._failed = warn, set()
        self.jsonl_path = Path(run_dir) / "metrics.jsonl"
        if resume_step is not None:
            _truncate_jsonl(self.jsonl_path, resume_step)
        purge = None if resume_step is None else resume_step + 1
        self.tb = self._guard("TensorBoard", lambda: SummaryWriter(str(Path(run_dir) / "tb"), purge_step=purge))
        self.jsonl = self._guard("metrics.jsonl", lambda: open(self.jsonl_path, "a", encoding="utf-8"))  # noqa: SIM115

    def log(self, step: int, scalars: dict[str, float], *, jsonl: bool = True) -> None:
        """One TensorBoard scalar per value and (with `jsonl`) one JSON line, all for `step`."""
        if self.tb is not None:
            self._guard("TensorBoard", lambda: [self.tb.add_scalar(t, v, step) for t, v in scalars.items()])
        if jsonl and self.jsonl is not None:
            self._guard("metrics.jsonl", lambda: (self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n"),
                                                  self.jsonl.flush()))

    def text(self, step: int, tag: str, text: str) -> None:
        # Indented lines render as preformatted text in TensorBoard's markdown view.
        if self.tb is not None:
            self._guard("TensorBoard", lambda: self.tb.add_text(tag, "\n".join("    " + line for line in
                                                                               text.split("\n")), step))

    def close(self) -> None:
        for name, sink in (("TensorBoard", self.tb), ("metrics.jsonl", self.jsonl)):
            if sink is not None:
                self._guard(name, sink.close)

    def _guard(self, name: str, action: Callable[[], Any]) -> Any:
        """Run `action`; on an OSError, warn once and turn that sink off."""
        if name in self._failed:
            return None
        try:
            return action()
        except OSError as e:
            self._failed.add(name)
            if name == "TensorBoard":
                self.tb = None
            else:
                self.jsonl = None
            self._warn(f"warning: cannot write {name} ({describe_os_error(e)}); training goes on without it")
            return None


class NullLogger:
    """What processes other than the main one log to: nothing."""

    def log(self, step: int, scalars: dict[str, float], *, jsonl: bool = True) -> None:
        pass

    def text(self, step: int, tag: str, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _truncate_jsonl(path: Path, last_step: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
            if _step_of(line) is not None and _step_of(line) <= last_step]
    write_atomic(path, "".join(kept))


def _step_of(line: str) -> Any:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line from a hard kill


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl, in order; a torn or foreign line is skipped, a missing file is none."""
    try:
        lines = (Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records
