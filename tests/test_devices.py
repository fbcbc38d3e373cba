"""Devices and precision: clear errors for CUDA that is not there, 'auto' that never picks what cannot run, seeds."""

import io
from pathlib import Path

import pytest
import torch

from charrnn import devices
from charrnn.devices import (
    autocast,
    available_memory,
    check_precision,
    resolve_device,
    resolve_precision,
    seeded_generator,
)
from charrnn.errors import UserError

CPU = torch.device("cpu")
CUDA = torch.device("cuda:0")  # only named, never used: these tests run on machines without CUDA too


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cpu_and_auto_without_cuda_are_the_cpu(no_cuda):
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto") == CPU


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_one_line_that_says_what_to_use(no_cuda, name):
    with pytest.raises(UserError, match=f"--device {name}: CUDA is not available on this machine; use --device cpu"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "CPU", ""])
def test_an_unknown_device_name_lists_the_ones_there_are(two_gpus, name):
    with pytest.raises(UserError, match="bad device .*: use auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_auto_and_cuda_pick_this_process_s_gpu_and_a_missing_index_is_refused(two_gpus):
    assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda:1", local_rank=0) == torch.device("cuda:1")  # an explicit index wins
    with pytest.raises(UserError, match="--device cuda:2: this machine has 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_an_explicit_precision_is_kept_as_given(precision, monkeypatch):
    monkeypatch.setattr(devices, "_cpu_runs_bf16", lambda cell: pytest.fail("probed for an explicit precision"))
    assert resolve_precision(precision, CPU) == precision


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_on_cuda_is_bf16_where_the_card_has_it(monkeypatch, bf16):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    assert resolve_precision("auto", CUDA) == ("bf16" if bf16 else "fp32")


@pytest.mark.parametrize("kernel, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_cpu_is_bf16_only_where_the_cell_has_a_bf16_kernel(monkeypatch, kernel, expected):
    asked = []
    monkeypatch.setattr(devices, "_cpu_runs_bf16", lambda cell: asked.append(cell) or kernel)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: not kernel, raising=False)  # never consulted
    assert resolve_precision("auto", CPU, "gru") == expected
    assert asked == ["gru"]


def test_bf16_on_a_cpu_without_a_kernel_for_the_cell_is_one_line(monkeypatch):
    monkeypatch.setattr(devices, "_cpu_runs_bf16", lambda cell: False)
    with pytest.raises(UserError, match="train.precision bf16: this CPU cannot run the fused GRU in bf16") as e:
        check_precision("bf16", CPU, "gru")
    assert "\n" not in str(e.value)


def test_check_precision_passes_what_runs(monkeypatch):
    monkeypatch.setattr(devices, "_cpu_runs_bf16", lambda cell: True)
    assert check_precision("bf16", CPU, "lstm") is None
    monkeypatch.setattr(devices, "_cpu_runs_bf16", lambda cell: pytest.fail("probed where it cannot matter"))
    assert check_precision("fp32", CPU, "lstm") is None
    assert check_precision("bf16", CUDA, "lstm") is None


def test_the_bf16_probe_gives_a_bool_and_leaves_torch_s_rng_alone():
    before = torch.get_rng_state()
    result = devices._cpu_runs_bf16.__wrapped__("rnn")  # past the cache, so that it really runs
    assert isinstance(result, bool)
    assert torch.equal(torch.get_rng_state(), before)


def test_autocast_fp32_is_plain_and_bf16_runs_matmuls_in_bf16():
    a = torch.ones(2, 2)
    with autocast(CPU, "fp32"):
        assert (a @ a).dtype == torch.float32
    with autocast(CPU, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    assert (a @ a).dtype == torch.float32


def draw(generator: torch.Generator) -> torch.Tensor:
    return torch.rand(8, generator=generator)


def test_a_seed_makes_a_generator_reproducible_and_none_draws_from_the_os():
    assert torch.equal(draw(seeded_generator("cpu", 5)), draw(seeded_generator(CPU, 5)))
    assert not torch.equal(draw(seeded_generator(CPU, 5)), draw(seeded_generator(CPU, 6)))
    assert not torch.equal(draw(seeded_generator(CPU, None)), draw(seeded_generator(CPU, None)))
    assert seeded_generator(CPU, 2**63 - 1).initial_seed() == 2**63 - 1


@pytest.mark.parametrize("seed", [-1, 2**63, 10**30])
def test_a_seed_out_of_range_is_one_line(seed):
    with pytest.raises(UserError, match=rf"--seed must be in \[0, 2\*\*63\), got {seed}"):
        seeded_generator(CPU, seed)


def test_available_memory_on_the_cpu_is_memavailable(monkeypatch):
    meminfo = "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    2048 kB\n"
    monkeypatch.setattr(devices, "open", lambda *a, **k: io.StringIO(meminfo), raising=False)
    assert available_memory(CPU) == 2048 * 1024


@pytest.mark.parametrize("meminfo", ["MemTotal: 1 kB\n", "MemAvailable: lots kB\n", None])
def test_available_memory_is_unknown_when_proc_meminfo_does_not_say(monkeypatch, meminfo):
    def fake_open(*args, **kwargs):
        if meminfo is None:
            raise FileNotFoundError("/proc/meminfo")  # not Linux
        return io.StringIO(meminfo)

    monkeypatch.setattr(devices, "open", fake_open, raising=False)
    assert available_memory(CPU) is None


def test_available_memory_on_cuda_is_the_free_bytes(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (123, 456))
    assert available_memory(CUDA) == 123


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux's /proc/meminfo")
def test_available_memory_of_this_machine_is_a_positive_number_of_bytes():
    free = available_memory(CPU)
    assert isinstance(free, int)
    assert free > 2**20
