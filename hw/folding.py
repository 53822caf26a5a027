"""Folding: how many processing elements (PE) and SIMD lanes each HW layer gets.

A folding is FINN's folding-config JSON (``{"MVAU_hls_0": {"PE": 16, "SIMD": 49}}``),
so a user can edit the file the build writes and pass it back, or hand it to FINN.

The default rule: each layer gets the folding with the fewest LUTs (then BRAM)
whose cycles per image do not exceed a target; the target is the input/output
DMA bound, because compute faster than the DMA can feed only costs LUTs.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from host.errors import ConfigError

# attributes a folding may set, per generic HW op
FOLDABLE = {"MVAU": ("PE", "SIMD"), "VVAU": ("PE", "SIMD"), "Thresholding": ("PE",), "LabelSelect": ("PE",),
            "ConvolutionInputGenerator": ("SIMD",), "Pool": ("PE",), "FMPadding": ("SIMD",)}
# ops fed by a depthwise sliding window, whose SIMD must equal their PE (as FINN's SetFolding ties them)
WINDOW_CONSUMERS = ("Pool", "VVAU")
# what else FINN folding configs set (FINN's SetFolding, finn-examples' files); applied where the node has it
EXTRA_ATTRS = ("ram_style", "ram_style_thresholds", "mem_mode", "resType", "runtime_writeable_weights",
               "parallel_window", "M", "depth_trigger_uram", "depth_trigger_bram", "deep_pipeline",
               "preferred_impl_style", "inFIFODepths", "outFIFODepths", "pumpedCompute", "pumpedMemory",
               "impl_style", "depth")
# value types and allowed values checkable without the design (FINN's attribute tables)
STATIC_TYPES = {"PE": int, "SIMD": int, "M": int, "parallel_window": int, "runtime_writeable_weights": int,
                "depth_trigger_uram": int, "depth_trigger_bram": int, "deep_pipeline": int, "depth": int,
                "ram_style": str, "ram_style_thresholds": str, "mem_mode": str, "resType": str,
                "preferred_impl_style": str, "impl_style": str, "inFIFODepths": list, "outFIFODepths": list}
STATIC_VALUES = {"ram_style": ("auto", "block", "distributed", "ultra"),
                 "ram_style_thresholds": ("auto", "block", "distributed"),
                 "mem_mode": ("internal_embedded", "internal_decoupled", "external", "dynamic", "external_mem"),
                 "resType": ("auto", "lut", "dsp"), "parallel_window": (0, 1), "runtime_writeable_weights": (0, 1),
                 "preferred_impl_style": ("", "hls", "rtl")}


def generic_op(op_type: str) -> str:
    for suffix in ("_hls", "_rtl"):
        if op_type.endswith(suffix):
            return op_type[: -len(suffix)]
    return op_type


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidates(inst) -> list[dict[str, int]]:
    """Every legal (PE[, SIMD]) setting of one HW layer."""
    op = generic_op(inst.onnx_node.op_type)
    if op == "MVAU":
        return [{"PE": pe, "SIMD": simd} for pe in divisors(inst.get_nodeattr("MH"))
                for simd in divisors(inst.get_nodeattr("MW"))]
    if op == "Thresholding":
        return [{"PE": pe} for pe in divisors(inst.get_nodeattr("NumChannels"))]
    if op == "LabelSelect":
        return [{"PE": pe} for pe in divisors(inst.get_nodeattr("Labels"))]
    if op == "ConvolutionInputGenerator":  # one window element per cycle (parallel_window stays 0)
        return [{"SIMD": simd} for simd in divisors(inst.get_nodeattr("IFMChannels"))]
    if op == "Pool":
        return [{"PE": pe} for pe in divisors(inst.get_nodeattr("Channels"))]
    if op == "FMPadding":
        return [{"SIMD": simd} for simd in divisors(inst.get_nodeattr("NumChannels"))]
    if op == "VVAU":  # SIMD (window) parallelism only once every channel has its PE
        channels, window = inst.get_nodeattr("Channels"), math.prod(inst.get_nodeattr("Kernel"))
        return [{"PE": pe, "SIMD": simd} for pe in divisors(channels) for simd in divisors(window)
                if simd == 1 or pe == channels]
    raise ConfigError(f"node {inst.onnx_node.name} ({inst.onnx_node.op_type}) has no folding rule")


def cost(inst, setting: dict[str, int], part: str) -> tuple[int, float, float]:
    """(cycles, LUT, BRAM_18K) of ``inst`` under ``setting`` on ``part``; leaves the setting applied."""
    for attr, value in setting.items():
        inst.set_nodeattr(attr, value)
    return int(inst.get_exp_cycles()), float(inst.lut_estimation(part)), float(inst.bram_estimation(part))


def tied_cost(inst, setting: dict[str, int], part: str, window=None) -> tuple[int, float, float]:
    """:func:`cost`, plus that of the depthwise ``window`` generator feeding ``inst`` (SIMD = PE)."""
    cycles, lut, bram = cost(inst, setting, part)
    if window is None:
        return cycles, lut, bram
    w_cycles, w_lut, w_bram = cost(window, {"SIMD": setting["PE"]}, part)
    return max(cycles, w_cycles), lut + w_lut, bram + w_bram


def cheapest_within(inst, target_cycles: int, part: str, window=None) -> dict[str, int]:
    """Fewest LUTs (then BRAM) with cycles <= target; the fastest setting if none reaches it.
    ``window``: the depthwise window generator tied to ``inst``, costed with it."""
    scored = [(tied_cost(inst, s, part, window), s) for s in candidates(inst)]
    ok = [(c, s) for c, s in scored if c[0] <= target_cycles]
    if ok:
        best = min(ok, key=lambda cs: (cs[0][1], cs[0][2], cs[0][0]))
    else:
        fastest = min(c[0] for c, _ in scored)
        best = min(((c, s) for c, s in scored if c[0] == fastest), key=lambda cs: (cs[0][1], cs[0][2]))
    return best[1]


def choose_folding(model, target_cycles: int, part: str) -> dict[str, dict]:
    """The default folding of every HW layer in ``model`` for ``target_cycles`` per image."""
    from qonnx.custom_op.registry import getCustomOp

    ties = window_ties(model)
    tied_windows = set(ties.values())
    folding = {}
    for node in model.graph.node:
        if node.name in tied_windows:
            continue  # folded with the layer it feeds
        window = getCustomOp(_node(model, ties[node.name])) if node.name in ties else None
        folding[node.name] = cheapest_within(getCustomOp(node), target_cycles, part, window)
        if window is not None:
            folding[ties[node.name]] = {"SIMD": folding[node.name]["PE"]}
    return {node.name: folding[node.name] for node in model.graph.node}


def window_ties(model) -> dict[str, str]:
    """{consumer name: depthwise ConvolutionInputGenerator name} for pools/VVAUs fed by one."""
    from qonnx.custom_op.registry import getCustomOp

    ties = {}
    for node in model.graph.node:
        if generic_op(node.op_type) not in WINDOW_CONSUMERS:
            continue
        producer = model.find_producer(node.input[0])
        if (producer is not None and generic_op(producer.op_type) == "ConvolutionInputGenerator"
                and getCustomOp(producer).get_nodeattr("depthwise")):
            ties[node.name] = producer.name
    return ties


def _node(model, name: str):
    return next(n for n in model.graph.node if n.name == name)


def apply_folding(model, folding: dict[str, dict]) -> None:
    """Set the attributes in ``folding`` on ``model``'s nodes; reject anything illegal."""
    from qonnx.custom_op.registry import getCustomOp

    names = {n.name: n for n in model.graph.node}
    for name, attrs in folding.items():
        if name == "Defaults":
            continue
        if name not in names:
            raise ConfigError(f"folding names node '{name}', which is not in the design; "
                              f"nodes: {', '.join(names)}")
        _apply_one(getCustomOp(names[name]), attrs)
    _check_ties(model)


def _check_ties(model) -> None:
    from qonnx.custom_op.registry import getCustomOp

    for consumer, window in window_ties(model).items():
        pe = getCustomOp(_node(model, consumer)).get_nodeattr("PE")
        simd = getCustomOp(_node(model, window)).get_nodeattr("SIMD")
        if pe != simd:
            raise ConfigError(f"folding: {window} (SIMD={simd}) is the depthwise window generator feeding "
                              f"{consumer} (PE={pe}); its SIMD must equal that PE")


def _apply_one(inst, attrs: dict) -> None:
    name, op = inst.onnx_node.name, generic_op(inst.onnx_node.op_type)
    fold_attrs = {k: v for k, v in attrs.items() if k in FOLDABLE.get(op, ())}
    unknown = set(attrs) - set(fold_attrs) - set(EXTRA_ATTRS)
    if unknown:
        raise ConfigError(f"folding for {name}: unknown attribute(s) {sorted(unknown)}; "
                          f"{op} takes {list(FOLDABLE.get(op, ())) + list(EXTRA_ATTRS)}")
    legal = candidates(inst)
    if fold_attrs and not any(all(c.get(k) == v for k, v in fold_attrs.items()) for c in legal):
        raise ConfigError(f"folding for {name}: {fold_attrs} is illegal; PE must divide the output "
                          f"channels and SIMD the input channels (e.g. {legal[len(legal) // 2]})")
    missing = [a for a in attrs if a not in inst.get_nodeattr_types()]
    if missing:
        raise ConfigError(f"folding for {name} ({inst.onnx_node.op_type}): it has no attribute "
                          f"{', '.join(missing)}; it takes {', '.join(a for a in (*FOLDABLE.get(op, ()), *EXTRA_ATTRS) if a in inst.get_nodeattr_types())}")
    for attr, value in attrs.items():
        inst.set_nodeattr(attr, value)


def check_static(path, data: dict) -> None:
    """Value types and allowed values a FINN folding config can be checked for without the design:
    ConfigError naming the entry, the attribute and what it takes."""
    for name, attrs in data.items():
        if name == "Defaults":
            continue
        for attr, value in attrs.items():
            want = STATIC_TYPES.get(attr)
            if want is not None and (not isinstance(value, want) or isinstance(value, bool)):
                raise ConfigError(f"folding file {path}: {name}.{attr} = {json.dumps(value)} is not "
                                  f"{'an integer' if want is int else 'a string' if want is str else 'a list'}")
            allowed = STATIC_VALUES.get(attr)
            if allowed is not None and value not in allowed:
                raise ConfigError(f"folding file {path}: {name}.{attr} = {json.dumps(value)} is not one of "
                                  f"{', '.join(map(json.dumps, allowed))}")
            if attr in ("PE", "SIMD", "M") and value < 1:
                raise ConfigError(f"folding file {path}: {name}.{attr} = {value} must be at least 1")


def read_folding(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"folding file {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"folding file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"folding file {path} must map node names to attribute objects, "
                          'e.g. {"MVAU_hls_0": {"PE": 16, "SIMD": 49}}')
    check_static(path, data)
    return data


def current_folding(model) -> dict[str, dict]:
    """The folding attributes as set on ``model``, in FINN's folding-config format."""
    from qonnx.custom_op.registry import getCustomOp

    out = {"Defaults": {}}
    for node in model.graph.node:
        inst = getCustomOp(node)
        attrs = FOLDABLE.get(generic_op(node.op_type), ())
        out[node.name] = {a: int(inst.get_nodeattr(a)) for a in attrs}
        for extra in ("ram_style", "mem_mode", "resType"):
            if extra in inst.get_nodeattr_types():
                out[node.name][extra] = inst.get_nodeattr(extra)
    return out
