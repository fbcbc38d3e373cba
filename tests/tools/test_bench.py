"""`charrnn bench`: the FLOP formula, and the table and JSON it writes."""

import json

from charrnn.tools.bench import Shape, train_flops_per_char
from tests.helpers import run_cli


def test_flop_formula():
    # one layer, E=64, H=512, V=65: 3 * (2*4*512*(64+512) + 2*512*65)
    assert train_flops_per_char(Shape(1, 512), 64, 65) == 3 * (2 * 4 * 512 * 576 + 2 * 512 * 65)
    two = train_flops_per_char(Shape(2, 512), 64, 65) - train_flops_per_char(Shape(1, 512), 64, 65)
    assert two == 3 * 2 * 4 * 512 * 1024


def test_bench_prints_a_table_and_writes_json(tmp_path, corpus_file):
    quoted = tmp_path / "it's \"quoted\"" / "corpus.txt"  # configs are built as data, not as strings
    quoted.parent.mkdir()
    quoted.write_text(corpus_file.read_text())
    out = run_cli("bench", "--corpus", quoted, "--shapes", "1x16,2x24", "--steps", 2, "--rounds", 1,
                  "--batch-size", 4, "--seq-len", 8, "--sample-length", 20, "--device", "cpu",
                  "--json", tmp_path / "b.json").stdout.decode()
    assert "| 1x16 |" in out
    assert "| 2x24 |" in out
    assert "% of matmul peak" in out
    assert "32 streams together" in out
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["matmul_gflops"] > 0
    assert [r["shape"] for r in data["rows"]] == ["1x16", "2x24"]
    for row in data["rows"]:
        assert row["raw_chars_per_sec"] > 0, row
        assert row["charrnn_chars_per_sec"] > 0, row
        assert row["ratio"] > 0, row
    assert set(data["sample_single"]) == {"lstm", "gru", "rnn"}
    assert min(data["sample_single"].values()) > 0
    assert data["sample_batched"] > 0
    assert "| GRU, 1 stream |" in out
    assert "| RNN, 1 stream |" in out
