"""The lr schedule (warmup, then cosine or constant, on steps or time) and which parameters decay."""

import copy

import pytest
import torch

from charrnn.config import load_config
from charrnn.training.optim import adamw, load_moments, lr_at, make_optimizer
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


def test_adamw_is_fused_on_the_cpu_and_falls_back_where_torch_has_no_fused_kernel(monkeypatch):
    params = [torch.nn.Parameter(torch.ones(3))]
    assert adamw(params, 1e-3, torch.device("cpu")).defaults["fused"] is True  # torch 2.4 and later
    real = torch.optim.AdamW

    def old_torch(*args, fused=None, **kwargs):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", old_torch)
    assert not adamw(params, 1e-3, torch.device("cpu")).defaults["fused"]


def test_the_fused_adamw_takes_over_the_state_of_the_default_one():
    """Checkpoints written before the fused kernel resume, and the fused step matches the default one."""
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(4, 5)) for _ in range(2)]
    old = torch.optim.AdamW([weights[0]], lr=1e-2, betas=(0.9, 0.99))
    new = adamw([weights[1]], 1e-2, torch.device("cpu"))
    for step in range(3):
        for w in weights:
            w.grad = torch.full_like(w, float(step + 1))
        (old if step < 2 else new).step()
        if step == 1:
            weights[1].data.copy_(weights[0].data)
            load_moments(new, copy.deepcopy(old.state_dict()))  # as from a checkpoint
    old.step()
    torch.testing.assert_close(weights[1], weights[0])
    assert new.param_groups[0]["fused"] is True  # the saved state's fused=None did not turn it off


def test_a_resume_keeps_its_own_weight_decay_and_the_saved_moments():
    model = random_model(10, embed_dim=4, hidden_size=8, num_layers=1)
    before = make_optimizer(model, load_config(None, ["train.weight_decay=0.1"]).train, torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before.step()
    after = make_optimizer(model, load_config(None, ["train.weight_decay=0.3"]).train, torch.device("cpu"))
    load_moments(after, copy.deepcopy(before.state_dict()))
    assert [g["weight_decay"] for g in after.param_groups] == [0.3, 0.0]
    moments = [after.state[p]["exp_avg"] for p in model.parameters()]
    assert all(torch.equal(m, before.state[p]["exp_avg"]) for m, p in zip(moments, model.parameters(), strict=True))
