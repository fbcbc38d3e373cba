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
    assert "| 1x16 |" in out and "| 2x24 |" in out and "% of matmul peak" in out and "32 streams together" in out
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["matmul_gflops"] > 0 and [r["shape"] for r in data["rows"]] == ["1x16", "2x24"]
    assert all(r["raw_chars_per_sec"] > 0 and r["charrnn_chars_per_sec"] > 0 and r["ratio"] > 0
               for r in data["rows"])
    assert set(data["sample_single"]) == {"lstm", "gru", "rnn"} and min(data["sample_single"].values()) > 0
    assert data["sample_batched"] > 0
    assert "| GRU, 1 stream |" in out and "| RNN, 1 stream |" in out
