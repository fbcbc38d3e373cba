"""CharRNN: shapes, initialisation, the carried state, every cell, dropout, the loss in nats and in bits."""

import math

import pytest
import torch

from charrnn.model import CharRNN, Dropout, bpc, cross_entropy, detach, eval_mode, parameter_count
from tests.helpers import random_model


def test_shapes():
    model = random_model(20, hidden_size=16)
    logits, (h, c) = model(torch.randint(0, 20, (3, 7)))
    assert logits.shape == (3, 7, 20)
    assert h.shape == c.shape == (2, 3, 16)
    assert model.init_hidden(5)[0].shape == (2, 5, 16)


def test_forget_gate_bias_starts_at_one():
    model = random_model(20, hidden_size=16)
    size = 16
    for layer in range(2):
        total = getattr(model.rnn, f"bias_ih_l{layer}") + getattr(model.rnn, f"bias_hh_l{layer}")
        assert torch.allclose(total[size:2 * size], torch.ones(size))


def test_carried_state_makes_two_windows_equal_one():
    model = random_model(20, hidden_size=16)
    ids = torch.randint(0, 20, (4, 12))
    whole, hidden_whole = model(ids)
    first, hidden = model(ids[:, :6])
    second, hidden = model(ids[:, 6:], hidden)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    torch.testing.assert_close(hidden[1], hidden_whole[1])


def test_overfits_a_short_text():
    text = torch.tensor([ord(c) - 97 for c in "thequickbrownfoxjumpsoverthelazydog" * 2])
    model = random_model(26, hidden_size=16, training=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    x, y = text[:-1].unsqueeze(0), text[1:].unsqueeze(0)
    for _ in range(150):
        loss = cross_entropy(model(x)[0], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_cross_entropy_matches_the_plain_definition():
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    plain = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1))
    torch.testing.assert_close(cross_entropy(logits, targets), plain)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_every_cell_runs_and_its_size_is_known_before_building(cell):
    model = random_model(20, cell, hidden_size=16, num_layers=3)
    logits, hidden = model(torch.randint(0, 20, (3, 7)))
    assert logits.shape == (3, 7, 20)
    assert len(hidden) == (2 if cell == "lstm" else 1)
    assert all(h.shape == (3, 3, 16) for h in hidden)
    assert model.num_params() == parameter_count(20, model.cfg)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_gru_and_rnn_start_with_orthogonal_recurrent_blocks_and_zero_biases(cell):
    model = random_model(20, cell, hidden_size=16)
    for block in model.rnn.weight_hh_l1.split(16, dim=0):
        torch.testing.assert_close(block @ block.t(), torch.eye(16), atol=1e-5, rtol=0)
    assert not model.rnn.bias_ih_l0.any()
    assert not model.rnn.bias_hh_l1.any()


def test_embedding_dropout_only_in_training():
    model = random_model(20, hidden_size=16, embed_dropout=0.5, training=True)
    ids = torch.randint(0, 20, (2, 5))
    model.eval()
    torch.testing.assert_close(model(ids)[0], model(ids)[0])
    model.train()
    assert not torch.equal(model(ids)[0], model(ids)[0])


def test_weight_dropout_drops_recurrent_weights_in_training_only():
    model = random_model(20, hidden_size=16, weight_dropout=0.5, training=True)
    ids = torch.randint(0, 20, (4, 30))
    plain = random_model(20, hidden_size=16)  # the same weights (the same seed), no weight dropout
    model.eval()
    torch.testing.assert_close(model(ids)[0], plain(ids)[0])  # eval mode: the full weights
    model.train()
    assert not torch.equal(model(ids)[0], model(ids)[0])  # a fresh mask each call
    model(ids)[0].sum().backward()
    # One mask a step, shared by every stream and time step: a dropped weight gets no gradient at all.
    for layer in range(2):
        w_ih, w_hh, _, _ = model.layer_weights(layer)
        assert 0.4 < (w_hh.grad == 0).float().mean() < 0.6
        assert (w_ih.grad == 0).float().mean() < 0.05  # the input weights are left alone


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_one_layer_at_a_time_is_the_fused_cell(cell, num_layers):
    # Training runs the layers one at a time (see the next test): without dropout it must be the very same function.
    model = random_model(20, cell, hidden_size=16, num_layers=num_layers, jitter=0.1, training=True)
    x, hidden = model.embed(torch.randint(0, 20, (3, 9)).t()), model.init_hidden(3)
    hidden = tuple(torch.randn_like(t) for t in hidden)
    for state in (None, hidden[0] if cell != "lstm" else hidden):
        whole, layered = model.rnn(x, state), model._layered(x, state)
        torch.testing.assert_close(layered, whole)
        grads = [torch.autograd.grad(out[0].square().sum(), list(model.rnn.parameters())) for out in (whole, layered)]
        torch.testing.assert_close(grads[1], grads[0])
    assert set(model.state_dict()) == {f"{part}.{key}" for part in ("embed", "rnn", "head")
                                       for key in getattr(model, part).state_dict()}


def test_dropout_between_layers_on_the_cpu_is_charrnns_own_mask(monkeypatch):
    # The fused cell would draw torch's mask between layers (9 of a 147 ms step); training on the CPU never asks it.
    model = random_model(20, hidden_size=16, dropout=0.5, training=True)
    whole = []
    monkeypatch.setattr(model.rnn, "forward", lambda *a: whole.append(1) or type(model.rnn).forward(model.rnn, *a))
    ids = torch.randint(0, 20, (4, 30))
    torch.manual_seed(1)
    first = model(ids)[0]
    torch.manual_seed(1)
    torch.testing.assert_close(model(ids)[0], first)  # the seed decides the masks
    assert not torch.equal(model(ids)[0], first) and not whole
    with eval_mode(model):
        model(ids)
    assert whole == [1]  # evaluation: the fused cell, whole, without dropout


def test_bpc_is_nats_over_ln_2():
    assert bpc(math.log(2)) == pytest.approx(1.0)
    assert bpc(0.0) == 0.0


def test_layer_weights_and_gate_rows_name_pytorchs_packed_blocks():
    model = random_model(20, "gru", hidden_size=16)
    w_ih, w_hh, b_ih, b_hh = model.layer_weights(1)
    assert w_ih is model.rnn.weight_ih_l1
    assert b_hh is model.rnn.bias_hh_l1
    assert w_hh.shape == (3 * 16, 16)
    assert model.gate_rows("reset") == slice(0, 16)
    assert model.gate_rows("update") == slice(16, 32)
    assert random_model(20, hidden_size=16).gate_rows("forget") == slice(16, 32)


def test_detach_cuts_the_graph_and_carries_fp32():
    h = torch.ones(2, 3, 4, requires_grad=True).bfloat16() * 2
    (out,) = detach((h,))
    assert not out.requires_grad
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.full((2, 3, 4), 2.0))


def test_eval_mode_restores_the_previous_mode_even_after_an_error():
    model = random_model(20, hidden_size=16, training=True)
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not model.training
        raise RuntimeError("boom")
    assert model.training
    model.eval()
    with eval_mode(model):
        pass
    assert not model.training


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_dropout_keeps_each_element_with_probability_1_minus_p_and_rescales(p, dtype):
    torch.manual_seed(0)
    x = torch.ones(200, 50, 64, dtype=dtype, requires_grad=True)
    y = Dropout(p)(x)
    kept = y != 0
    keep = 1 - round(p * 256) / 256  # p to 1/256: 0.1 keeps 230 of 256
    assert y.dtype == dtype and y.shape == x.shape
    assert abs(kept.float().mean().item() - keep) < 0.003  # 640,000 elements: the std is under 0.0008
    assert torch.allclose(y[kept].float(), torch.full_like(y[kept].float(), 1 / keep), rtol=4e-3)  # bf16's 8 bits
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient is the same mask and scale
    for row in kept.reshape(-1, 8).float().mean(0):  # the eight lanes of each 64-bit draw are alike
        assert abs(row.item() - keep) < 0.01


@pytest.mark.parametrize("p", [0.001, 0.999])
def test_cpu_dropout_that_256ths_cannot_hold_is_torchs_exact_one(p):
    torch.manual_seed(0)
    kept = (Dropout(p)(torch.ones(1000, 1000)) != 0).float().mean().item()
    assert abs(kept - (1 - p)) < 0.0003  # not 1 and 0, as p rounded to 1/256 would give


def test_cpu_dropout_is_seeded_odd_sized_and_off_in_eval():
    x = torch.randn(7, 3, 5)
    drop = Dropout(0.3)
    torch.manual_seed(1)
    first = drop(x)
    torch.manual_seed(1)
    assert torch.equal(first, drop(x))  # the run's seed decides the masks, so resume stays bitwise
    assert not torch.equal(first, drop(x))
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert Dropout(0.3)(torch.empty(0, 4)).shape == (0, 4)


def adaptive_model(**kw) -> CharRNN:
    """10 symbols, of which the 4 most frequent are scored in the head: ids 1, 3, 7 and 8 by these counts."""
    counts = torch.tensor([5, 100, 3, 50, 7, 1, 0, 20, 9, 2])
    return random_model(10, head_cutoff=4, counts=counts, jitter=0.1, **kw)


def test_an_adaptive_head_scores_exact_probabilities_in_frequency_order():
    model = adaptive_model()
    assert model.rank.tolist() == [5, 0, 6, 1, 4, 8, 9, 2, 3, 7]  # 1 is the most frequent, 6 the least
    assert parameter_count(10, model.cfg) == model.num_params() and model.head.out_features == 5
    logits, _ = model(torch.randint(0, 10, (3, 7)))
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(3, 7))  # log-probabilities over all 10 symbols
    out = torch.randn(2, 32)
    head = model.head(out).log_softmax(-1)  # the 4 frequent symbols by rank, then the cluster of the other 6
    torch.testing.assert_close(model.logits(out)[:, [1, 3, 7, 8]], head[:, :4])
    rare = model.tail(out).log_softmax(-1) + head[:, 4:]  # ranks 4..9: ids 4, 0, 2, 9, 5, 6
    torch.testing.assert_close(model.logits(out)[:, [4, 0, 2, 9, 5, 6]], rare)


@pytest.mark.parametrize("targets", ["frequent", "mixed"])
def test_an_adaptive_heads_loss_is_the_cross_entropy_of_its_probabilities(targets):
    model = adaptive_model()
    ids = torch.randint(0, 10, (3, 7))
    every = torch.arange(21).reshape(3, 7)
    y = torch.tensor([1, 3, 7, 8])[every % 4] if targets == "frequent" else every % 10  # the 4 frequent, or all 10
    logits, hidden = model(ids)
    for reduction in ("none", "sum", "mean"):
        loss, same = model(ids, None, y, reduction)
        torch.testing.assert_close(loss, cross_entropy(logits, y, reduction))
        torch.testing.assert_close(same, hidden)
    # The rare cluster learns only from the rare symbols: without one, it gets no gradient at all.
    model.train()
    model(ids, None, y)[0].backward()
    assert (model.tail[1].weight.grad is None) == (targets == "frequent")
    assert model.head.weight.grad is not None


def test_an_adaptive_head_trains_under_bf16_autocast_on_rare_symbols():
    model = adaptive_model(training=True)
    ids, y = torch.randint(0, 10, (4, 9)), torch.tensor([[6, 5, 0, 2, 9, 4, 1, 3, 7]] * 4)  # every rare one
    exact, _ = model(ids, None, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model(ids, None, y)
    assert loss.dtype == torch.float32 and abs(loss.item() - exact.item()) < 0.05
    loss.backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())


@pytest.mark.parametrize("cutoff", [0, 9, 10, 50])
def test_a_cutoff_that_leaves_fewer_than_two_rare_symbols_is_the_full_head(cutoff):
    model = random_model(10, head_cutoff=cutoff)
    assert not model.adaptive and model.head.out_features == 10 and not hasattr(model, "tail")
    assert parameter_count(10, model.cfg) == model.num_params()
