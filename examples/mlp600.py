"""A FINN-tutorial-style network of one's own, for `flows build --onnx` (docs/own-models.md).

As FINN's cybersecurity tutorial (notebooks/end2end_example/cybersecurity): an MLP on 600
binary features, W2A2, 64-64-64 hidden, one bipolar output; trained on {0, 1} inputs and
exported with Brevitas to QONNX through a wrapper that takes bipolar {-1, +1} inputs
((x + 1) / 2 inside the graph) and binarises the output to {-1, +1}. The graph has no input
quantiser: the input is declared BIPOLAR by exporting with a 1-bit signed QuantTensor.

The data is not UNSW-NB15 (not on this machine): it is made by a fixed rule, so accuracy
means something: label 1 when more of features 0..19 are set than of features 20..39
(ties: 0), the other 560 features random noise.

    python examples/mlp600.py OUT_DIR [--epochs N] [--train N] [--test N]

writes OUT_DIR/mlp600.onnx and OUT_DIR/mlp600.npz (x_train, y_train, x_test, y_test; x in
{-1, +1} int8 as the model takes it, y in {0, 1}).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FEATURES, HIDDEN, WEIGHT_BITS, ACT_BITS = 600, (64, 64, 64), 2, 2


def make_data(n_train: int = 4000, n_test: int = 500, seed: int = 0) -> dict[str, np.ndarray]:
    """The rule-made data set, inputs bipolar int8 (N, 600), labels int64 {0, 1}."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, size=(n_train + n_test, FEATURES), dtype=np.int8)
    labels = (bits[:, :20].sum(1) > bits[:, 20:40].sum(1)).astype(np.int64)
    x = (2 * bits - 1).astype(np.int8)
    return {"x_train": x[:n_train], "y_train": labels[:n_train], "x_test": x[n_train:], "y_test": labels[n_train:]}


def build_mlp():
    """The Brevitas MLP as FINN's tutorial writes it (input {0, 1}, one output logit)."""
    from brevitas.nn import QuantLinear, QuantReLU
    from torch import nn

    layers, width = [], FEATURES
    for hidden in HIDDEN:
        layers += [QuantLinear(width, hidden, bias=True, weight_bit_width=WEIGHT_BITS), nn.BatchNorm1d(hidden),
                   nn.Dropout(0.2), QuantReLU(bit_width=ACT_BITS)]
        width = hidden
    layers.append(QuantLinear(width, 1, bias=True, weight_bit_width=WEIGHT_BITS))
    return nn.Sequential(*layers)


def train(model, data: dict, epochs: int = 10, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    x = torch.from_numpy((data["x_train"].astype(np.float32) + 1) / 2)
    y = torch.from_numpy(data["y_train"].astype(np.float32))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx])[:, 0], y[idx])
            loss.backward()
            opt.step()
    return model.eval()


def export_model(model, path: Path) -> Path:
    """QONNX with a bipolar (1, 600) input and a bipolar (1, 1) output, as FINN's tutorial exports."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantIdentity
    from brevitas.quant_tensor import IntQuantTensor

    class ForExport(torch.nn.Module):
        def __init__(self, pretrained):
            super().__init__()
            self.pretrained = pretrained
            self.qnt_output = QuantIdentity(quant_type="binary", scaling_impl_type="const", bit_width=1,
                                            min_val=-1.0, max_val=1.0)

        def forward(self, x):  # x bipolar {-1, +1}; the trained network takes {0, 1}
            return self.qnt_output(self.pretrained((x + torch.tensor([1.0])) / 2.0))

    wrapped = ForExport(model).eval()
    one = torch.tensor(1.0)
    x = IntQuantTensor(torch.ones(1, FEATURES), scale=one, zero_point=torch.tensor(0.0), bit_width=one,
                       signed=True, training=False)
    export_qonnx(wrapped, input_t=x, export_path=str(path))
    return declare_input(path, "BIPOLAR")


def declare_input(path: Path, datatype: str) -> Path:
    """Annotate the graph input's QONNX datatype, as FINN's tutorial does after export."""
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(str(path))
    model.set_tensor_datatype(model.graph.input[0].name, DataType[datatype])
    model.save(str(path))
    return path


def accuracy(model, data: dict) -> float:
    import torch

    with torch.no_grad():
        logits = model(torch.from_numpy((data["x_test"].astype(np.float32) + 1) / 2))[:, 0]
    return float(((logits > 0).numpy() == data["y_test"]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=500)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = make_data(args.train, args.test)
    np.savez(args.out / "mlp600.npz", **data)
    model = train(build_mlp(), data, args.epochs)
    export_model(model, args.out / "mlp600.onnx")
    print(f"wrote {args.out}/mlp600.onnx and mlp600.npz; Brevitas test accuracy {100 * accuracy(model, data):.2f}%")


if __name__ == "__main__":
    main()
