"""Benchmark targets built from one trained model, for ``flows bench`` (build machine).

Each is a ``host.bench.Target``: ``run(images) -> top-1 predictions`` on the
package's test vectors (the accelerator's uint8 inputs, reshaped here to the
model's (C, H, W) raw pixels):

- ``cpu-torch-float``: a plain float ``nn.Sequential`` equivalent to the
  Brevitas model: Linear/Conv2d with the *dequantised* quantised weights,
  BatchNorm as is, each activation quantiser as the float op it computes
  (binary: ``scale * (x >= 0 ? 1 : -1)``; n-bit narrow signed:
  ``clamp(round(x / scale), -(2^(n-1)-1), 2^(n-1)-1) * scale``, torch.round
  being half-to-even as Brevitas'), then the final positive scale.
- ``cpu-brevitas``: the Brevitas model itself.
- ``cpu-onnxruntime``: Brevitas' QCDQ export on onnxruntime's CPU provider.
  QCDQ cannot express 1-bit quantisers (Brevitas asserts "Binary quant not
  supported"), so for models with any binary layer the float-equivalent
  model above is exported to plain ONNX instead; the target's note says which.
- ``numpy-executor``: host.executor, what the board's ARM runs.
- ``fpga``: the package's bitfile through PYNQ (only on a board).
- ``fpga-sim``: Accelerator + SimBackend: the executor's outputs, modelled time.
- ``gpu-torch-fp32``, ``gpu-torch-fp16``: the float model on CUDA; fp16 is
  *approximate* (see host.bench.MIN_AGREEMENT). Skipped, saying why, without CUDA.

A target that cannot be built here comes back skipped with the reason.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from flows.errors import ConfigError
from host.bench import Package, Target, accelerator_target, executor_target, on_board, open_accelerator, skipped

TARGETS = ("cpu-torch-float", "cpu-brevitas", "cpu-onnxruntime", "numpy-executor", "fpga", "fpga-sim",
           "gpu-torch-fp32", "gpu-torch-fp16")
CHECKPOINT_TARGETS = {"cpu-torch-float", "cpu-brevitas", "cpu-onnxruntime", "gpu-torch-fp32", "gpu-torch-fp16"}


def check_names(names) -> list[str]:
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise ConfigError(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    return list(names)


def make_targets(names, package: Package, checkpoint: Path | None, machine: str, threads: int = 1) -> list[Target]:
    """The named targets, in order; ``machine`` labels the measured ones ("measured on ...");
    ``threads``: onnxruntime's intra-op threads (torch's are set by the caller)."""
    ckpt, why = _checkpoint(checkpoint)
    return [_make(name, package, ckpt, why, machine, threads) for name in check_names(names)]


def _make(name: str, package: Package, ckpt, why: str, machine: str, threads: int) -> Target:
    if name in CHECKPOINT_TARGETS and ckpt is None:
        return skipped(name, why)
    if name == "numpy-executor":
        from host import executor

        return executor_target(name, executor.load(package.dir / (package.meta.get("executor") or "executor")),
                               machine)
    if name == "fpga-sim":
        return accelerator_target(name, open_accelerator(package, "sim"))
    if name == "fpga":
        reason = on_board(package)
        return skipped(name, reason) if reason else accelerator_target(name, open_accelerator(package, "pynq"))
    if name == "cpu-brevitas":
        return torch_target(name, ckpt.model(), ckpt.data.image_shape, "cpu", machine, note="Brevitas QuantMLP/CNV")
    if name == "cpu-torch-float":
        return torch_target(name, float_model(ckpt.model()), ckpt.data.image_shape, "cpu", machine,
                            note="nn.Sequential, dequantised weights, float activation quantisers")
    if name == "cpu-onnxruntime":
        return onnxruntime_target(name, ckpt, machine, threads)
    return gpu_target(name, ckpt, half=name.endswith("fp16"))


def _checkpoint(path: Path | None):
    """(checkpoint, None) or (None, why the torch targets are skipped)."""
    if path is None:
        return None, "no checkpoint (pass --checkpoint, or bench a build's deploy/ beside its train/)"
    if Path(path).is_dir():
        return None, f"checkpoint {path} is a directory (pass the .pt file as --checkpoint)"
    if not Path(path).is_file():
        return None, f"checkpoint {path} not found (pass --checkpoint)"
    from qat.train import load_checkpoint

    return load_checkpoint(path), ""


def to_model_layout(images: np.ndarray, image_shape) -> np.ndarray:
    """The package's inputs, in the accelerator's layout (flat for an MLP, NHWC for a CNN's
    partition: flows.execute.to_graph_input), as the (N, C, H, W) raw pixels a model takes."""
    c, h, w = image_shape
    if images.ndim == 4 and images.shape[1:] == (h, w, c) and (h, w, c) != (c, h, w):
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    return images.reshape(len(images), c, h, w)


# -- the float model ------------------------------------------------------------------


def float_model(model):
    """The plain float nn.Sequential computing what the Brevitas ``model`` computes (eval mode)."""
    layers = [Affine(float(model.pixel_scale), -1.0)]
    if hasattr(model, "features"):  # QuantMLP: flatten first
        layers = [nn.Flatten()] + layers + [_float_layer(m) for m in model.features]
    else:  # QuantCNV: convolutions, flatten, linears
        layers += [_float_layer(m) for m in model.conv_features] + [nn.Flatten()]
        layers += [_float_layer(m) for m in model.linear_features]
    return nn.Sequential(*[m for m in layers if m is not None]).eval()


def _float_layer(m):
    import copy

    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear

    from qat.layers import PositiveScale

    if isinstance(m, nn.Dropout):
        return None
    if isinstance(m, QuantIdentity):
        return ActQuantFloat.of(m)
    if isinstance(m, (QuantLinear, QuantConv2d)):
        return _dequantised(m)
    if isinstance(m, PositiveScale):
        return Affine(float(m.log_scale.detach().exp()), 0.0)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d)):
        return copy.deepcopy(m).eval()
    raise ConfigError(f"no float equivalent for layer {type(m).__name__}; cpu-torch-float supports "
                      "QuantIdentity, QuantLinear, QuantConv2d, BatchNorm, MaxPool2d, Dropout, PositiveScale")


def _dequantised(m):
    from brevitas.nn import QuantLinear

    w = m.quant_weight().value.detach().clone()
    if isinstance(m, QuantLinear):
        layer = nn.Linear(m.in_features, m.out_features, bias=False)
    else:
        layer = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                          m.groups, bias=False)
    if m.bias is not None:
        raise ConfigError(f"{type(m).__name__} with a bias: cpu-torch-float expects bias-free layers")
    layer.weight.data.copy_(w)
    return layer.eval()


class Affine(nn.Module):
    """y = a * x + b, scalars."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return x * self.a + self.b if self.b else x * self.a

    def extra_repr(self) -> str:
        return f"a={self.a:g}, b={self.b:g}"


class ActQuantFloat(nn.Module):
    """A Brevitas activation quantiser as float ops: binary sign, or signed round-clamp
    (narrow: -qmax..qmax; not narrow, as CNV's Q1.7 input: -qmax-1..qmax)."""

    def __init__(self, scale: float, bits: int, narrow: bool = True):
        super().__init__()
        self.scale, self.bits = scale, bits
        self.qmax = 2 ** (bits - 1) - 1
        self.qmin = -self.qmax if narrow else -self.qmax - 1

    @classmethod
    def of(cls, m) -> "ActQuantFloat":
        q = m.act_quant(torch.zeros(1, 1))
        if not bool(q.signed) or q.zero_point.abs().max() != 0:
            raise ConfigError("cpu-torch-float expects signed, zero-point-free activation quantisers")
        return cls(float(q.scale.reshape(-1)[0]), int(q.bit_width), bool(m.act_quant.is_narrow_range))

    def forward(self, x):
        if self.bits == 1:
            return torch.where(x >= 0, self.scale, -self.scale).to(x.dtype)
        return torch.clamp(torch.round(x / self.scale), self.qmin, self.qmax) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}, bits={self.bits}"


# -- torch targets --------------------------------------------------------------------


def torch_target(name: str, model, image_shape, device: str, label: str, half: bool = False,
                 note: str = "") -> Target:
    """A torch module as a target: uint8 pixels -> float (or half) on ``device`` -> argmax on the host."""
    dtype = torch.float16 if half else torch.float32
    model = model.to(device=device, dtype=dtype).eval()

    @torch.no_grad()
    def run(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(to_model_layout(images, image_shape)).to(device).to(dtype)
        return model(x).argmax(1).cpu().numpy()

    def layers(images: np.ndarray) -> list[tuple[str, bool, float]]:
        return torch_layer_times(model, lambda: run(images), device)

    return Target(name, label, run, layer_times=layers, approximate=half, note=note)


def torch_layer_times(model, call, device: str) -> list[tuple[str, bool, float]]:
    """One run of ``call()``: seconds of each top-level layer of ``model`` (the children of its
    Sequentials/ModuleLists, containers and Dropout aside), by forward hooks, in call order;
    the flag marks matrix layers (Linear, Conv2d and Brevitas' QuantLinear/QuantConv2d)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    containers = (nn.Sequential, nn.ModuleList)
    layers = [(name, m) for name, m in model.named_modules()
              if name and isinstance(_parent(model, name), containers) and not isinstance(m, (nn.Dropout, *containers))]
    starts, times, handles = {}, [], []

    def pre(name):
        def hook(module, args):
            sync()
            starts[name] = time.perf_counter()
        return hook

    def post(name):
        def hook(module, args, output):
            sync()
            times.append((f"{name} {type(module).__name__}", isinstance(module, (nn.Linear, nn.Conv2d)),
                          time.perf_counter() - starts[name]))
        return hook

    for name, m in layers:
        handles += [m.register_forward_pre_hook(pre(name)), m.register_forward_hook(post(name))]
    try:
        call()
    finally:
        for h in handles:
            h.remove()
    return times


def _parent(model, name: str):
    parent = model
    for part in name.split(".")[:-1]:
        parent = getattr(parent, part)
    return parent


def gpu_target(name: str, ckpt, half: bool) -> Target:
    if not torch.cuda.is_available():
        return skipped(name, f"CUDA is not available (torch {torch.__version__}"
                             f"{', a CPU-only build' if torch.version.cuda is None else ''})")
    device = torch.cuda.get_device_name(0)
    return torch_target(name, float_model(ckpt.model()), ckpt.data.image_shape, "cuda",
                        f"measured on {device}", half=half,
                        note="float model on CUDA" + ("; fp16 may disagree: agreement shown" if half else ""))


# -- onnxruntime ----------------------------------------------------------------------


def onnxruntime_target(name: str, ckpt, label: str, threads: int = 1) -> Target:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path, how = export_onnx(ckpt, Path(tmp) / "model.onnx")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # the exporter's initializer-as-input warnings
        opts.intra_op_num_threads = opts.inter_op_num_threads = threads
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    image_shape = tuple(ckpt.data.image_shape)
    input_name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        x = to_model_layout(images, image_shape).astype(np.float32)
        return session.run(None, {input_name: x})[0].argmax(1)

    return Target(name, label, run, note=f"onnxruntime {ort.__version__} CPU, {threads} thread(s), {how}")


def export_onnx(ckpt, path: Path) -> tuple[Path, str]:
    """QCDQ when every quantiser has more than one bit, else the float-equivalent model as plain ONNX."""
    spec = ckpt.spec
    x = torch.zeros(1, *ckpt.data.image_shape)
    axes = {"x": {0: "n"}, "y": {0: "n"}}
    binary = min(*spec.weight_bits, *spec.act_bits, spec.in_bits) == 1
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if binary:
            torch.onnx.export(float_model(ckpt.model()), (x,), str(path), input_names=["x"], output_names=["y"],
                              dynamic_axes=axes)
            return path, "float-equivalent ONNX (QCDQ cannot express 1-bit quantisers)"
        from brevitas.export import export_onnx_qcdq

        export_onnx_qcdq(ckpt.model(), args=x, export_path=str(path), input_names=["x"], output_names=["y"],
                         dynamic_axes=axes)
        return path, "Brevitas QCDQ export"
