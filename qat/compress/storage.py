"""Storage accounting of a checkpoint's weights under each encoding, and the CPU effect of sparsity.

Every figure is computed exactly (bits) from the integers the weight quantisers make of
the checkpoint's weights (qat.compress.weights), per layer and in total:

- ``dense_float32``: every weight as a float32 (the uncompressed reference);
- ``dense_quant``: every weight at its quantised bit width b;
- ``csr``: nonzeros at b bits, a column index of ceil(log2(columns)) bits each and
  rows + 1 row pointers of ceil(log2(nonzeros + 1)) bits;
- ``bitmask``: one bit per weight plus the nonzeros at b bits;
- ``relative``: Deep Compression's sparse layout (Han et al., arXiv 1510.00149, sec. 2):
  the layer flattened row-major, each nonzero stored with the run of zeros before it in
  p bits; a run longer than 2^p - 1 inserts a filler entry (a stored zero); the value at
  b bits; p (1..8) chosen per layer to minimise the size;
- ``shared``: the same entries, each value as an index into a codebook of the layer's
  distinct nonzero values (plus a zero code when there are fillers), ceil(log2(codes))
  bits, and the codebook at b bits per value;
- ``shared_huffman``: the shared layout with the value indices and the runs each
  Huffman-coded (Deep Compression's last step), plus each code's table (a code length
  per symbol of the alphabet, canonical Huffman) and the codebook; p chosen again.

Parameters beside the weights (``side``: batch-norm folded to a per-channel scale and
shift, the output scale, one scale per weight layer) are counted as float32 in every
encoding. Convolution weights (out, in, kh, kw) count as (out, in*kh*kw) matrices.
"""
from __future__ import annotations

import heapq
import math
import time
import warnings
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import torch

from qat.compress.weights import IntWeights, model_int_weights, weight_layers

if TYPE_CHECKING:
    from qat.train import Checkpoint

ENCODINGS = ("dense_float32", "dense_quant", "csr", "bitmask", "relative", "shared", "shared_huffman")
MAX_RUN_BITS = 8


def huffman_lengths(counts: dict) -> dict:
    """Code length of each symbol of an optimal (Huffman) prefix code for ``counts`` {symbol: count > 0}.
    A single symbol gets a 1-bit code (a decoder still needs one bit per symbol)."""
    if len(counts) == 1:
        return {next(iter(counts)): 1}
    heap = [(c, i, (s,)) for i, (s, c) in enumerate(sorted(counts.items(), key=lambda kv: repr(kv[0])))]
    heapq.heapify(heap)
    lengths = dict.fromkeys(counts, 0)
    tie = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def huffman_bits(symbols, alphabet: int) -> int:
    """Exact bits of ``symbols`` Huffman-coded, plus the canonical code's table: one code length of
    ceil(log2(longest + 1)) bits for each of the ``alphabet`` possible symbols."""
    counts = Counter(np.asarray(symbols).tolist())
    if not counts:
        return 0
    lengths = huffman_lengths(counts)
    table = alphabet * max(1, math.ceil(math.log2(max(lengths.values()) + 1)))
    return sum(counts[s] * lengths[s] for s in counts) + table


def _bits_for(n: int) -> int:
    """Bits of an index that takes n values (at least 1)."""
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


def relative_entries(flat: np.ndarray, run_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Deep Compression's sparse layout of a flattened layer: (runs of zeros before each entry, entry
    values); a run over 2^run_bits - 1 inserts filler entries of value 0. Trailing zeros are implied."""
    top = 2 ** run_bits - 1
    positions = np.flatnonzero(flat)
    gaps = np.diff(positions, prepend=-1) - 1
    fillers = gaps // (top + 1)  # filler entries before each nonzero, each standing for top + 1 positions
    at = np.cumsum(fillers + 1) - 1  # where each nonzero lands among the entries
    runs = np.full(len(positions) + int(fillers.sum()), top, dtype=np.int64)
    values = np.zeros_like(runs)
    runs[at], values[at] = gaps - fillers * (top + 1), flat[positions]
    return runs, values


def _shared_bits(values: np.ndarray, runs: np.ndarray, run_bits: int, bits: int, codebook: int,
                 huffman: bool) -> int:
    """A relative layout whose values are codebook indices (zero has a code when fillers exist)."""
    codes = codebook + int((values == 0).any())
    if huffman:
        return huffman_bits(values, codes) + huffman_bits(runs, 2 ** run_bits) + codebook * bits
    return len(values) * (_bits_for(codes) + run_bits) + codebook * bits


def dense_bits(w: IntWeights) -> dict:
    """Exact bits of one layer stored densely: as float32, and at its quantised width."""
    return {"dense_float32": 32 * w.ints.size, "dense_quant": w.bits * w.ints.size}


def layer_bits(w: IntWeights) -> dict:
    """Exact bits of one layer under every encoding, and the layout choices made."""
    mat = w.ints.reshape(w.ints.shape[0], -1)
    rows, cols = mat.shape
    n, flat = mat.size, mat.reshape(-1)
    nnz = int(np.count_nonzero(flat))
    distinct = len(np.unique(flat[flat != 0]))
    out = {**dense_bits(w),
           "csr": nnz * (w.bits + _bits_for(cols)) + (rows + 1) * _bits_for(nnz + 1),
           "bitmask": n + nnz * w.bits}
    layouts = {p: relative_entries(flat, p) for p in range(1, MAX_RUN_BITS + 1)}
    choices = {}
    for enc, size in (("relative", lambda r, v, p: len(v) * (w.bits + p)),
                      ("shared", lambda r, v, p: _shared_bits(v, r, p, w.bits, distinct, False)),
                      ("shared_huffman", lambda r, v, p: _shared_bits(v, r, p, w.bits, distinct, True))):
        p = min(layouts, key=lambda q: size(*layouts[q], q))
        out[enc], choices[enc] = size(*layouts[p], p), p
    return {"bits": out, "nonzeros": nnz, "distinct_nonzero": distinct, "run_bits": choices}


def side_params(model: torch.nn.Module) -> int:
    """Parameters beside the quantised weights, as a deployment stores them: batch-norm folded to two per
    channel, any other parameter as is (output scale), and one scale per weight layer."""
    weights = {id(m.weight) for _, m in weight_layers(model)}
    count = len(weights)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            count += 2 * m.num_features
        else:
            count += sum(p.numel() for p in m.parameters(recurse=False) if id(p) not in weights)
    return count


def storage_report(ckpt: "Checkpoint") -> dict:
    """Parameters and bytes of ``ckpt`` under each encoding (ENCODINGS), per layer and in total, with the
    ratio of each total against dense float32."""
    model = ckpt.model()
    side = side_params(model)
    layers, totals = [], dict.fromkeys(ENCODINGS, 32 * side)
    for w in model_int_weights(model):
        sizes = layer_bits(w)
        layers.append({"layer": w.name, "shape": list(w.ints.shape), "bits": w.bits, "params": int(w.ints.size),
                       "nonzeros": sizes["nonzeros"], "distinct_nonzero": sizes["distinct_nonzero"],
                       "run_bits": sizes["run_bits"], "bytes": {e: _bytes(b) for e, b in sizes["bits"].items()}})
        for e, b in sizes["bits"].items():
            totals[e] += b
    params = sum(l["params"] for l in layers)
    total_bytes = {e: _bytes(b) for e, b in totals.items()}
    return {"label": "computed exactly from the checkpoint's quantised weights",
            "encodings": list(ENCODINGS), "layers": layers,
            "side": {"params": side, "bytes": _bytes(32 * side), "what": "batch-norm folded (2 per channel), "
                     "output scale and one scale per weight layer, float32 in every encoding"},
            "total": {"params": params + side, "weights": params,
                      "nonzeros": sum(l["nonzeros"] for l in layers), "bytes": total_bytes,
                      "ratio_vs_float32": {e: round(total_bytes["dense_float32"] / b, 2) for e, b in total_bytes.items()}}}


def dense_storage(ckpt: "Checkpoint") -> dict:
    """Parameters and bytes of ``ckpt`` under the two dense encodings only (storage_report's
    ``dense_float32`` and ``dense_quant`` totals, without searching the sparse layouts)."""
    model = ckpt.model()
    side = side_params(model)
    totals, params = {"dense_float32": 32 * side, "dense_quant": 32 * side}, side
    for w in model_int_weights(model):
        params += int(w.ints.size)
        for e, b in dense_bits(w).items():
            totals[e] += b
    return {"params": params, "bytes": {e: _bytes(b) for e, b in totals.items()}}


def _bytes(bits: int) -> int:
    return -(-bits // 8)


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@torch.no_grad()
def sparse_cpu_effect(ckpt: "Checkpoint", batch_sizes: tuple[int, ...] = (1, 256), repeats: int = 50,
                      seed: int = 0) -> dict:
    """Time each layer's matrix product dense and as a torch CSR sparse matrix, on this CPU, with the
    layer's integer weights and integer inputs (so both products are exact and must be equal)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for w in model_int_weights(ckpt.model()):
        dense = torch.from_numpy(w.ints.reshape(w.ints.shape[0], -1)).float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            sparse = dense.to_sparse_csr()
        for batch in batch_sizes:
            x = torch.randint(-8, 9, (dense.shape[1], batch), generator=gen).float()
            if not torch.equal(dense @ x, sparse @ x):
                raise AssertionError(f"layer {w.name}: sparse and dense products differ")
            t_dense = _median_seconds(lambda: dense @ x, repeats)
            t_sparse = _median_seconds(lambda: sparse @ x, repeats)
            rows.append({"layer": w.name, "shape": list(dense.shape), "batch": batch,
                         "density": round(float((dense != 0).float().mean()), 6),
                         "dense_us": round(1e6 * t_dense, 2), "csr_us": round(1e6 * t_sparse, 2),
                         "speedup": round(t_dense / t_sparse, 2)})
    return {"label": f"measured on this machine's CPU with {torch.get_num_threads()} thread(s), median of "
                     f"{repeats}; outputs checked equal", "layers": rows}
