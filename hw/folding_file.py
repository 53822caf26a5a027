"""FINN folding-config files as FINN and finn-examples write them, applied to our design.

A file maps node names to attributes (``{"MVAU_hls_0": {"PE": 16, "SIMD": 49, "ram_style":
"block"}}``), plus FINN's ``"Defaults": {"attr": [value, ["op_type", ...] or "all"]}``.
Names in such files come from another build of the same network, so they are matched:

* exactly, else by op kind and index ignoring the ``_hls``/``_rtl`` suffix (a file's
  ``Thresholding_hls_0`` is our ``Thresholding_rtl_0``), when the file and the design hold as
  many nodes of that kind;
* otherwise by kind and order: the k-th named node of a kind is our k-th node of that kind.
  Kinds are roles: a ``ConvolutionInputGenerator`` feeding a matrix layer (a convolution's
  window) is not one feeding a pool (our pools are a depthwise window plus ``Pool``; FINN's
  CNV has ``StreamingMaxPool`` there, matched to our ``Pool`` layers).
* Where counts differ and names do not match, the error lists the design's nodes of that
  kind with their shapes and legal PE/SIMD.

Every attribute is checked before anything is applied: its type and allowed values from
FINN's own attribute table of the node, PE/SIMD legality (divisors). An attribute FINN's
folding configs carry (:data:`FOLDING_ATTRS`) that this node does not have is reported and
not applied; an attribute that defines the layer's arithmetic (MH, ActVal, ...) or that no
FINN layer has is an error. Nodes the file does not name keep the default rule's folding,
with a report line each.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from host.errors import ConfigError
from hw.folding import EXTRA_ATTRS, FOLDABLE, candidates, generic_op, window_ties

FOLDING_ATTRS = ("PE", "SIMD", *EXTRA_ATTRS)  # what FINN folding configs set
# FINN op names in files that are our ops under another name
FILE_KINDS = {"StreamingMaxPool": "Pool", "MatrixVectorActivation": "MVAU",
              "VectorVectorActivation": "VVAU", "StreamingFCLayer_Batch": "MVAU", "FMPadding_Batch": "FMPadding"}
NAME = re.compile(r"^(?P<op>.+?)(?:_(?:hls|rtl|Batch))?_(?P<index>\d+)$")


@dataclass(frozen=True)
class Match:
    """One file entry applied to one design node."""

    file_name: str
    node: str
    how: str  # "by name", "by kind and index", "by kind and order"


def role(model, node) -> str:
    """A node's kind for matching: its generic op; a pool's depthwise window is its own kind."""
    op = generic_op(node.op_type)
    if op == "ConvolutionInputGenerator" and node.name in set(window_ties(model).values()):
        return "ConvolutionInputGenerator (pool window)"
    return op


def file_role(name: str) -> tuple[str, int] | None:
    """(kind, index) of a file's node name, e.g. Thresholding_hls_0 -> (Thresholding, 0)."""
    m = NAME.match(name)
    if not m:
        return None
    op = m.group("op")
    return FILE_KINDS.get(op, op), int(m.group("index"))


def match_nodes(model, entries: list[str]) -> list[Match]:
    """Pair each file entry with a design node (see the module docstring)."""
    design: dict[str, list] = {}
    for node in model.graph.node:
        design.setdefault(role(model, node), []).append(node)
    names = {n.name for n in model.graph.node}
    by_kind: dict[str, list[tuple[int, str]]] = {}
    matches = []
    for entry in entries:
        if entry in names:
            matches.append(Match(entry, entry, "by name"))
            continue
        parsed = file_role(entry)
        if parsed is None or parsed[0] not in design:
            raise ConfigError(f"folding file names node '{entry}', which matches no node of the design; "
                              f"nodes: {describe_nodes(model, list(model.graph.node))}")
        by_kind.setdefault(parsed[0], []).append((parsed[1], entry))
    for kind, named in by_kind.items():
        nodes = design[kind]
        named.sort()
        indices = [_index(n.name) for n in nodes]
        if len(named) == len(nodes):
            how = "by kind and index" if [i for i, _ in named] == indices else "by kind and order"
            matches += [Match(entry, node.name, how) for (_, entry), node in zip(named, nodes)]
        elif all(i in indices for i, _ in named):
            matches += [Match(entry, nodes[indices.index(i)].name, "by kind and index") for i, entry in named]
        else:
            raise ConfigError(f"folding file names {len(named)} {kind} node(s) ({', '.join(e for _, e in named)}) "
                              f"but the design has {len(nodes)}, numbered differently, so which is which is "
                              f"ambiguous; name them as the design does: {describe_nodes(model, nodes)}")
    taken = [m.node for m in matches]
    double = {n for n in taken if taken.count(n) > 1}
    if double:
        raise ConfigError(f"folding file names design node {sorted(double)[0]} twice (under different names); "
                          "keep one entry")
    return matches


def _index(name: str) -> int | None:
    m = NAME.match(name)
    return int(m.group("index")) if m else None


def describe_nodes(model, nodes) -> str:
    """'MVAU_hls_0 (MVAU MH=64 MW=784; PE | 64, SIMD | 784), ...' for an error message."""
    from qonnx.custom_op.registry import getCustomOp

    parts = []
    for node in nodes:
        inst = getCustomOp(node)
        shape = " ".join(f"{k}={inst.get_nodeattr(k)}" for k in ("MH", "MW", "NumChannels", "Channels",
                                                                  "IFMChannels", "Labels")
                         if k in inst.get_nodeattr_types())
        legal = _legal_text(inst)
        parts.append(f"{node.name} ({generic_op(node.op_type)} {shape}; {legal})")
    return "; ".join(parts)


def _legal_text(inst) -> str:
    legal = candidates(inst)
    text = []
    for attr in FOLDABLE.get(generic_op(inst.onnx_node.op_type), ()):
        values = sorted({c[attr] for c in legal})
        text.append(f"{attr} in {values}")
    return ", ".join(text)


def check_value(inst, attr: str, value) -> None:
    """ConfigError unless ``value`` has the type and one of the allowed values of FINN's ``attr``."""
    node = inst.onnx_node
    kind, _, default, *allowed = inst.get_nodeattr_types()[attr]
    where = f"folding for {node.name} ({node.op_type}): {attr}"
    ok = {"i": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "s": lambda v: isinstance(v, str),
          "ints": lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
          "f": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}.get(kind, lambda v: True)
    if not ok(value):
        want = {"i": "an integer", "s": "a string", "ints": "a list of integers", "f": "a number"}.get(kind, kind)
        raise ConfigError(f"{where} = {value!r} is not {want} (e.g. {default!r})")
    if allowed and allowed[0] and value not in allowed[0]:
        raise ConfigError(f"{where} = {value!r} is not one of {sorted(allowed[0])}")


def check_attrs(inst, attrs: dict, file_name: str) -> tuple[dict, list[str]]:
    """(attributes to apply, report lines for those not applied); ConfigError for a bad one."""
    node = inst.onnx_node
    types = inst.get_nodeattr_types()
    apply, lines = {}, []
    for attr, value in attrs.items():
        if attr in types and attr in FOLDING_ATTRS:
            check_value(inst, attr, value)
            apply[attr] = value
        elif attr in types:
            raise ConfigError(f"folding for {node.name} ({node.op_type}): {attr} defines the layer's "
                              f"arithmetic, not its folding; a folding file sets {_settable(types)}")
        elif attr in FOLDING_ATTRS:
            lines.append(f"{node.name}: {attr}={value!r} from '{file_name}' not applied: {node.op_type} has no "
                         f"{attr} (it takes {_settable(types)})")
        else:
            raise ConfigError(f"folding for {node.name} ({node.op_type}): unknown attribute {attr!r}; "
                              f"{node.op_type} takes {_settable(types)}")
    fold = {k: v for k, v in apply.items() if k in FOLDABLE.get(generic_op(node.op_type), ())}
    legal = candidates(inst)
    full = {k: fold.get(k, inst.get_nodeattr(k)) for k in FOLDABLE.get(generic_op(node.op_type), ())}
    if fold and not any(all(c.get(k) == v for k, v in full.items()) for c in legal):
        raise ConfigError(f"folding for {node.name} ({node.op_type}): {fold} is illegal; PE must divide the output "
                          f"channels and SIMD the input channels: {_legal_text(inst)}")
    if apply.get("parallel_window") == 1 and full.get("SIMD") != inst.get_nodeattr("IFMChannels"):
        raise ConfigError(f"folding for {node.name}: parallel_window=1 needs SIMD = IFMChannels "
                          f"({inst.get_nodeattr('IFMChannels')}), got SIMD={full.get('SIMD')}")
    return apply, lines


def _settable(types: dict) -> str:
    return ", ".join(a for a in FOLDING_ATTRS if a in types)


def defaults_for(raw: dict, node) -> dict:
    """FINN's "Defaults": {attr: [value, ["op_type", ...] | "all"]} entries that apply to ``node``."""
    out = {}
    for attr, spec in (raw.get("Defaults") or {}).items():
        if not isinstance(spec, list) or len(spec) % 2:
            raise ConfigError(f'folding file "Defaults" entry {attr!r} must be [value, ["op_type", ...]] or '
                              '[value, "all"]')
        for value, ops in zip(spec[::2], spec[1::2]):
            if ops == "all" or node.op_type in ops or generic_op(node.op_type) in ops:
                out[attr] = value
    return out


def apply_folding_file(model, raw: dict, default: dict[str, dict], file_name: str) -> list[str]:
    """Apply a FINN folding-config ``raw`` on top of the ``default`` folding; returns the report.

    Nothing is changed when a ConfigError is raised (everything is checked first)."""
    from qonnx.custom_op.registry import getCustomOp

    from hw.folding import apply_folding

    nodes = {n.name: n for n in model.graph.node}
    matches = match_nodes(model, [k for k in raw if k != "Defaults"])
    planned, lines = {}, []
    for m in matches:
        inst = getCustomOp(nodes[m.node])
        attrs = {**{k: v for k, v in defaults_for(raw, nodes[m.node]).items()}, **raw[m.file_name]}
        apply, skipped = check_attrs(inst, attrs, m.file_name)
        planned[m.node] = apply
        source = m.file_name if m.how == "by name" else f"{m.file_name} (matched {m.how})"
        text = ", ".join(f"{k}={v}" for k, v in apply.items()) or "nothing"
        lines.append(f"{m.node}: {text} from {source}")
        lines += skipped
    ties = window_ties(model)
    for consumer, window in ties.items():  # a pool's window follows its pool's PE
        if consumer in planned and "PE" in planned[consumer] and window not in planned:
            planned[window] = {"SIMD": planned[consumer]["PE"]}
            lines.append(f"{window}: SIMD={planned[consumer]['PE']} (the depthwise window of {consumer} takes "
                         "its PE)")
    for name in nodes:
        if name not in planned:
            fixed = defaults_for(raw, nodes[name])
            apply, skipped = check_attrs(getCustomOp(nodes[name]), fixed, "Defaults") if fixed else ({}, [])
            planned[name] = {**default.get(name, {}), **apply}
            text = ", ".join(f"{k}={v}" for k, v in planned[name].items())
            lines.append(f"{name}: not named in the file; default rule: {text}")
            lines += skipped
    apply_folding(model, planned)
    return lines


def named_cycles(model, raw: dict) -> int:
    """The most cycles per image among the layers the file names, as it folds them (0: none)."""
    import copy

    from qonnx.custom_op.registry import getCustomOp

    trial = copy.deepcopy(model)
    apply_folding_file(trial, raw, {}, "")
    named = {m.node for m in match_nodes(trial, [k for k in raw if k != "Defaults"])}
    return max((int(getCustomOp(n).get_exp_cycles()) for n in trial.graph.node if n.name in named), default=0)
