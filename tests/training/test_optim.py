"""The lr schedule (warmup, then cosine or constant, on steps or time) and which parameters decay."""

import pytest
import torch

from charrnn.config import load_config
from charrnn.training.optim import lr_at, make_optimizer
from tests.helpers import random_model


def test_lr_warms_up_then_decays_to_the_floor():
    cfg = load_config(None, ["train.lr=1.0", "train.warmup_steps=10", "train.min_lr_ratio=0.1"]).train
    assert lr_at(cfg, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(cfg, 9, 0.0) == pytest.approx(1.0)
    assert lr_at(cfg, 10, 0.0) == pytest.approx(1.0)
    assert lr_at(cfg, 50, 0.5) == pytest.approx(0.55)
    assert lr_at(cfg, 100, 1.0) == pytest.approx(0.1)
    assert lr_at(cfg, 200, 2.0) == pytest.approx(0.1)


def test_constant_schedule_and_time_progress():
    cfg = load_config(None, ["train.lr=2.0", "train.warmup_steps=0", "train.schedule='constant'"]).train
    assert lr_at(cfg, 5, 0.9) == 2.0
    cosine = load_config(None, ["train.lr=1.0", "train.warmup_steps=0", "train.min_lr_ratio=0.0"]).train
    assert lr_at(cosine, 1, 1.0) == pytest.approx(0.0)
    assert lr_at(cosine, 1, 2.0) == pytest.approx(0.0)


def test_only_matrices_are_decayed():
    model = random_model(10, embed_dim=4, hidden_size=8, num_layers=1)
    decayed, plain = make_optimizer(model, load_config(None).train, torch.device("cpu")).param_groups
    assert decayed["weight_decay"] > 0
    assert plain["weight_decay"] == 0
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"])
