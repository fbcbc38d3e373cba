"""CUDA paths; skipped cleanly on machines without a GPU (CI has none)."""

import pytest
import torch

from charrnn.checkpoint import load_model
from charrnn.config import load_config
from charrnn.generation.sampling import sample_text
from charrnn.training.loop import train
from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def run(tmp_path, corpus, precision):
    cfg = load_config(ROOT / "configs" / "tiny.toml", [f"data.path='{corpus}'", "train.device='cuda'",
                                                        f"train.precision='{precision}'", "train.max_steps=60"])
    return train(cfg, tmp_path / precision)


def test_mixed_precision_tracks_fp32(tmp_path, corpus_file):
    fp32 = run(tmp_path, corpus_file, "fp32").val_loss
    for precision in ("bf16", "fp16"):
        assert abs(run(tmp_path, corpus_file, precision).val_loss - fp32) < 0.05


def test_cuda_checkpoint_samples_on_cpu(tmp_path, corpus_file):
    run(tmp_path, corpus_file, "fp32")
    model, vocab, _ = load_model(tmp_path / "fp32", "cpu")
    assert next(model.parameters()).device.type == "cpu"
    assert len(sample_text(model, vocab, "def ", 50, 1.0, seed=0)) == 54
