"""Storage accounting: exact bits of each encoding on a constructed layer, Huffman on a constructed stream."""
import numpy as np
import pytest

from qat.compress.storage import huffman_bits, huffman_lengths, layer_bits, relative_entries, storage_report
from qat.compress.weights import IntWeights

# 4 x 8 layer at 4 bits: 6 nonzeros (values -1, 2, 3, 7) at flat positions 2, 7, 16, 28, 29, 31
INTS = np.array([[0, 0, 3, 0, 0, 0, 0, -1],
                 [0, 0, 0, 0, 0, 0, 0, 0],
                 [7, 0, 0, 0, 0, 0, 0, 0],
                 [0, 0, 0, 0, 2, 2, 0, 3]])


def test_huffman_size_of_a_constructed_stream():
    stream = list("aaaaabbcd")
    assert huffman_lengths({"a": 5, "b": 2, "c": 1, "d": 1}) == {"a": 1, "b": 2, "c": 3, "d": 3}
    # 5*1 + 2*2 + 3 + 3 = 15 bits of code, plus a table of 4 code lengths of 2 bits (longest code 3)
    assert huffman_bits(stream, 4) == 15 + 4 * 2
    assert huffman_bits(["x"] * 7, 1) == 7 + 1  # one symbol: one bit each


def test_relative_layout_inserts_fillers_for_long_runs():
    runs, values = relative_entries(INTS.reshape(-1), 2)  # runs of at most 3 zeros
    # gaps 2, 4, 8, 11, 0, 1 zeros; a filler stands for 3 zeros and a stored 0
    assert runs.tolist() == [2, 3, 0, 3, 3, 0, 3, 3, 3, 0, 1]
    assert values.tolist() == [3, 0, -1, 0, 0, 7, 0, 0, 2, 2, 3]
    decoded = np.concatenate([np.r_[np.zeros(r, int), v] for r, v in zip(runs, values)])
    assert decoded.tolist() == INTS.reshape(-1)[:len(decoded)].tolist()


def test_bits_of_each_encoding_on_a_constructed_layer():
    sizes = layer_bits(IntWeights("fc", INTS, 1 / 7, 4))
    bits = sizes["bits"]
    assert sizes["nonzeros"] == 6 and sizes["distinct_nonzero"] == 4
    assert bits["dense_float32"] == 32 * 32 and bits["dense_quant"] == 4 * 32
    assert bits["csr"] == 6 * (4 + 3) + 5 * 3  # values + column index (8 columns) + 5 row pointers of 3 bits
    assert bits["bitmask"] == 32 + 6 * 4
    assert bits["relative"] == 6 * (4 + 4) and sizes["run_bits"]["relative"] == 4  # 4-bit runs: no filler
    assert bits["shared"] == 6 * (2 + 4) + 4 * 4  # 2-bit codes of 4 values, 4-bit runs, codebook of 4 x 4 bits
    best = min(huffman_bits(v, 4 + int((v == 0).any())) + huffman_bits(r, 2 ** p) + 4 * 4
               for p in range(1, 9) for r, v in [relative_entries(INTS.reshape(-1), p)])
    assert bits["shared_huffman"] == best
    # at 4-bit runs: values 3,-1,7,2,2,3 code in 2 bits each (12) + table 4 x 2; runs all distinct (6 symbols:
    # 2 x 2 + 4 x 3 = 16 bits) + table 16 x 2; codebook 16
    r, v = relative_entries(INTS.reshape(-1), 4)
    assert huffman_bits(v, 4) + huffman_bits(r, 16) + 16 == 12 + 8 + 16 + 32 + 16


def test_report_totals_add_layers_and_side_parameters():
    import torch

    from qat.models import parse_model_name
    from qat.train import Checkpoint, DatasetInfo, TrainConfig
    from qat.models import build_model

    torch.manual_seed(0)
    spec = parse_model_name("tfc-w2a2")
    model = build_model(spec, (1, 8, 8), 10, 16)
    ckpt = Checkpoint(spec, DatasetInfo("digits", (1, 8, 8), 10, 16), TrainConfig(), model.state_dict(), {})
    report = storage_report(ckpt)
    side = 3 * 64 * 2 + 1 + 4  # batch-norm folded, output scale, one scale per weight layer
    assert report["side"]["params"] == side
    weights = 64 * 64 * 3 + 10 * 64
    assert report["total"]["weights"] == weights
    assert report["total"]["bytes"]["dense_float32"] == 4 * (weights + side)
    assert report["total"]["bytes"]["dense_quant"] == (2 * weights + 32 * side) // 8
    assert report["total"]["ratio_vs_float32"]["dense_float32"] == pytest.approx(1.0)


def test_cpu_effect_checks_sparse_against_dense_on_each_layer():
    import torch

    from qat.compress.storage import sparse_cpu_effect
    from qat.models import build_model, parse_model_name
    from qat.train import Checkpoint, DatasetInfo, TrainConfig

    torch.manual_seed(0)
    spec = parse_model_name("tfc-w2a2")
    state = build_model(spec, (1, 8, 8), 10, 16).state_dict()
    state["features.2.weight"][:, :48] = 0.0  # three quarters of the first layer's weights pruned
    ckpt = Checkpoint(spec, DatasetInfo("digits", (1, 8, 8), 10, 16), TrainConfig(), state, {})
    rows = sparse_cpu_effect(ckpt, batch_sizes=(1, 4), repeats=2)["layers"]
    assert [(r["layer"], r["batch"]) for r in rows][:2] == [("features.2", 1), ("features.2", 4)]
    assert rows[0]["density"] <= 0.25 and len(rows) == 8
