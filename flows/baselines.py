"""Benchmark targets built from one trained model, for ``flows bench`` (build machine).

Each is a ``host.timing.Target``: ``run(images) -> top-1 predictions`` on the
package's test vectors (the accelerator's uint8 inputs, reshaped here to the
model's (C, H, W) raw pixels). Targets are registered: a function decorated
with ``@target(name)`` builds one from its name and a `Context` (the package, the
checkpoint, the machine label), its docstring's first line describes it, and
``TARGETS`` (name -> `TargetKind`, in registration order) is what ``flows
bench --targets`` accepts. Adding a target is one decorated function, here or
in a module imported before the bench runs. `describe()` lists them.

The float model (``cpu-torch-float``, also behind ``cpu-onnxruntime`` for 1-bit
models and the GPU targets): Linear/Conv2d with the *dequantised* quantised
weights, BatchNorm as is, each activation quantiser as the float op it computes
(binary: ``scale * (x >= 0 ? 1 : -1)``; n-bit narrow signed:
``clamp(round(x / scale), -(2^(n-1)-1), 2^(n-1)-1) * scale``, torch.round
being half-to-even as Brevitas'), then the final positive scale.

A target that cannot be built here comes back skipped with the reason.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from flows.errors import ConfigError
from flows.layout import to_model
from host.deploy import Package, on_board, open_accelerator
from host.timing import Target, accelerator_target, executor_target, skipped

@dataclass(frozen=True)
class Context:
    """What every target is built from."""

    package: Package
    checkpoint: object | None  # qat.train.Checkpoint, or None when there is none
    why_no_checkpoint: str  # the reason, when checkpoint is None
    machine: str  # "measured on <machine>", the label of wall-clock targets
    threads: int = 1  # onnxruntime's intra-op threads (torch's are set by the caller)


@dataclass(frozen=True)
class TargetKind:
    """A registered target: its name, how to build it, whether it needs the trained checkpoint."""

    name: str
    make: Callable[[str, Context], Target]  # (name, context) -> Target
    needs_checkpoint: bool

    @property
    def description(self) -> str:
        return (self.make.__doc__ or "").strip().split("\n")[0]


TARGETS: dict[str, TargetKind] = {}


def target(name: str, needs_checkpoint: bool = False):
    """Decorator: register ``make(name, ctx) -> Target`` as target ``name`` (ConfigError on a duplicate name).
    A target that ``needs_checkpoint`` is skipped, saying why, when the bench has no checkpoint."""
    def register(make: Callable[[str, Context], Target]):
        if name in TARGETS:
            raise ConfigError(f"benchmark target '{name}' is registered twice")
        TARGETS[name] = TargetKind(name, make, needs_checkpoint)
        return make
    return register


def describe() -> list[str]:
    """One line per registered target: name, what it is."""
    return [f"{kind.name}: {kind.description}" for kind in TARGETS.values()]


def check_names(names) -> list[str]:
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise ConfigError(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    return list(names)


def make_targets(names, package: Package, checkpoint: Path | None, machine: str, threads: int = 1) -> list[Target]:
    """The named targets, in order; ``machine`` labels the measured ones ("measured on ...");
    ``threads``: onnxruntime's intra-op threads (torch's are set by the caller)."""
    ckpt, why = _checkpoint(checkpoint)
    ctx = Context(package, ckpt, why, machine, threads)
    return [_make(TARGETS[name], ctx) for name in check_names(names)]


def _make(kind: TargetKind, ctx: Context) -> Target:
    if kind.needs_checkpoint and ctx.checkpoint is None:
        return skipped(kind.name, ctx.why_no_checkpoint)
    return kind.make(kind.name, ctx)


# -- the registered targets (this order is the default order of flows bench) -----------------


@target("cpu-torch-float", needs_checkpoint=True)
def _cpu_torch_float(name: str, ctx: Context) -> Target:
    """a plain float nn.Sequential equivalent to the Brevitas model (see the module docstring), on the CPU"""
    return torch_target(name, float_model(ctx.checkpoint.model()), ctx.checkpoint.data.image_shape,
                        "cpu", ctx.machine, note="nn.Sequential, dequantised weights, float activation quantisers")


@target("cpu-brevitas", needs_checkpoint=True)
def _cpu_brevitas(name: str, ctx: Context) -> Target:
    """the Brevitas model itself, on the CPU"""
    return torch_target(name, ctx.checkpoint.model(), ctx.checkpoint.data.image_shape, "cpu",
                        ctx.machine, note="Brevitas QuantMLP/CNV")


@target("cpu-onnxruntime", needs_checkpoint=True)
def _cpu_onnxruntime(name: str, ctx: Context) -> Target:
    """Brevitas' QCDQ export on onnxruntime's CPU provider (1-bit models: the float model as plain ONNX)

    QCDQ cannot express 1-bit quantisers (Brevitas asserts "Binary quant not supported"); the note says which."""
    return onnxruntime_target(name, ctx.checkpoint, ctx.machine, ctx.threads)


@target("numpy-executor")
def _numpy_executor(name: str, ctx: Context) -> Target:
    """host.executor, what the board's ARM runs"""
    from host import executor

    package = ctx.package
    return executor_target(name,
                           executor.load(package.dir / (package.meta.get("executor") or "executor")), ctx.machine)


@target("fpga")
def _fpga(name: str, ctx: Context) -> Target:
    """the package's bitfile through PYNQ (only on a board)"""
    reason = on_board(ctx.package)
    return skipped(name, reason) if reason else accelerator_target(name, open_accelerator(ctx.package, "pynq"))


@target("fpga-sim")
def _fpga_sim(name: str, ctx: Context) -> Target:
    """Accelerator + SimBackend: the executor's outputs, modelled time"""
    return accelerator_target(name, open_accelerator(ctx.package, "sim"))


@target("gpu-torch-fp32", needs_checkpoint=True)
def _gpu_fp32(name: str, ctx: Context) -> Target:
    """the float model on CUDA (skipped, saying why, without CUDA)"""
    return gpu_target(name, ctx.checkpoint, half=False)


@target("gpu-torch-fp16", needs_checkpoint=True)
def _gpu_fp16(name: str, ctx: Context) -> Target:
    """the float model on CUDA in fp16: *approximate* (see host.timing.MIN_AGREEMENT)"""
    return gpu_target(name, ctx.checkpoint, half=True)


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
    """The package's inputs, in the accelerator's layout (flows.layout), as the (N, C, H, W) raw
    pixels a model takes."""
    return to_model(images, image_shape)


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
