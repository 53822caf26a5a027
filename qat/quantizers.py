"""Brevitas quantisers for FINN-friendly models, as in brevitas_examples/bnn_pynq.

Constant, per-tensor scales: weights in [-1, 1], activations in [-1, 1], narrow
signed ranges. A bit width of 1 selects binary (bipolar) quantisation, which
FINN maps to XNOR-popcount.
"""
from __future__ import annotations

from brevitas.core.bit_width import BitWidthImplType
from brevitas.core.quant import QuantType
from brevitas.core.restrict_val import FloatToIntImplType, RestrictValueType
from brevitas.core.scaling import ScalingImplType
from brevitas.core.zero_point import ZeroZeroPoint
from brevitas.inject import ExtendedInjector, value
from brevitas.quant.solver import ActQuantSolver, WeightQuantSolver


class CommonQuant(ExtendedInjector):
    bit_width_impl_type = BitWidthImplType.CONST
    scaling_impl_type = ScalingImplType.CONST
    restrict_scaling_type = RestrictValueType.FP
    zero_point_impl = ZeroZeroPoint
    float_to_int_impl_type = FloatToIntImplType.ROUND
    scaling_per_output_channel = False
    narrow_range = True
    signed = True

    @value
    def quant_type(bit_width):
        return QuantType.BINARY if bit_width == 1 else QuantType.INT


class WeightQuant(CommonQuant, WeightQuantSolver):
    scaling_const = 1.0


class ActQuant(CommonQuant, ActQuantSolver):
    min_val = -1.0
    max_val = 1.0


class FixedPointInputQuant(CommonQuant, ActQuantSolver):
    """Brevitas' CNV input quantiser: signed fixed point in [-1, 1 - 2^(1-b)], all 2^b levels,
    power-of-two scale 2^(1-b). Pass ``max_val=fixed_point_max(b)``. Its values times any
    integer weights sum exactly in float32, so the float model is exact in the first layer."""

    restrict_scaling_type = RestrictValueType.POWER_OF_TWO
    narrow_range = False
    min_val = -1.0


def fixed_point_max(bit_width: int) -> float:
    return 1.0 - 2.0 ** (1 - bit_width)
