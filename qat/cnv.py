"""CNV, the convolutional network of FINN's BNN-PYNQ, as in
``brevitas_examples/bnn_pynq/models/CNV.py``.

Six unpadded 3x3 convolutions (64, 64, 128, 128, 256, 256 channels), each
followed by BatchNorm2d and an activation quantiser, with 2x2 max pools after
the second and fourth; then QuantLinear 512 -> 512 -> classes. On 3x32x32
images the convolutions leave a 256x1x1 feature map. As with the zoo's MLPs
(qat.models), the model takes raw pixels (0..pixel_max) and scales them itself,
and ends in a learned positive scalar instead of Brevitas' TensorNorm, so the
flow's input handling and verification are the same for every topology. The
input quantiser is Brevitas' own: 8-bit fixed point Q1.7 with a power-of-two
scale, so the float model's first convolution sums exactly and the integer
dataflow graph can match it bit for bit.
"""
from __future__ import annotations

from typing import Sequence

import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
from torch import nn

from host.errors import ConfigError
from qat.layers import PositiveScale
from qat.quantizers import ActQuant, FixedPointInputQuant, WeightQuant, fixed_point_max

# (output channels, max pool after it) per convolution
CNV_OUT_CH_POOL: tuple[tuple[int, bool], ...] = ((64, False), (64, True), (128, False), (128, True),
                                                 (256, False), (256, False))
CNV_FC: tuple[int, ...] = (512, 512)  # hidden fully connected widths
KERNEL_SIZE = 3
POOL_SIZE = 2
BN_EPS = 1e-4
N_WEIGHT_LAYERS = len(CNV_OUT_CH_POOL) + len(CNV_FC) + 1  # 9: convolutions, then linears
N_ACT_LAYERS = len(CNV_OUT_CH_POOL) + len(CNV_FC)  # 8
IN_BITS = 8  # Brevitas quantises CNV's input to 8 bits whatever the layer precision


def feature_side(side: int) -> int:
    """Height (or width) of the last convolution's output for an input of ``side`` pixels; 0 if it vanishes."""
    for _, pool in CNV_OUT_CH_POOL:
        side -= KERNEL_SIZE - 1
        if side < 1:
            return 0
        if pool:
            side //= POOL_SIZE
    return side


def check_image_shape(image_shape: Sequence[int]) -> None:
    """Refuse images too small for six unpadded 3x3 convolutions and two 2x2 pools (< 32x32)."""
    _, h, w = image_shape
    if feature_side(h) < 1 or feature_side(w) < 1:
        raise ConfigError(f"cnv needs images of at least 32x32 pixels: its unpadded convolutions and pools "
                          f"shrink {h}x{w} images to nothing; use --data cifar10 or the bundled digits32 "
                          "(32x32), or an MLP (tfc, sfc, lfc, lenet) on 28x28 or 8x8 images")


def input_quantiser(bits: int) -> QuantIdentity:
    """Brevitas' CNV input quantiser: fixed point Q1.(bits-1) (Q1.7 for 8 bits); binary for 1 bit."""
    if bits == 1:
        return QuantIdentity(act_quant=ActQuant, bit_width=1)
    return QuantIdentity(act_quant=FixedPointInputQuant, bit_width=bits, max_val=fixed_point_max(bits))


class QuantCNV(nn.Module):
    """Quantised CNV over raw pixels: (N, C, H, W) in [0, pixel_max] -> (N, classes) logits.

    ``weight_bits`` has one entry per layer (6 convolutions then 3 linears),
    ``act_bits`` one per hidden activation (6 then 2), ``in_bits`` is the input quantiser's;
    ``widths`` (optional) the 6 convolutions' output channels then the 2 hidden linear widths.
    """

    def __init__(self, weight_bits: Sequence[int], act_bits: Sequence[int], in_bits: int,
                 image_shape: Sequence[int], num_classes: int, pixel_max: int,
                 widths: Sequence[int] | None = None):
        super().__init__()
        check_image_shape(image_shape)
        channels, h, w = image_shape
        self.register_buffer("pixel_scale", torch.tensor(2.0 / pixel_max))
        self.conv_features = nn.ModuleList([input_quantiser(in_bits)])
        widths = tuple(widths) if widths is not None else (*(ch for ch, _ in CNV_OUT_CH_POOL), *CNV_FC)
        conv_widths, fc_widths = widths[:len(CNV_OUT_CH_POOL)], widths[len(CNV_OUT_CH_POOL):]
        for i, (out_ch, (_, pool)) in enumerate(zip(conv_widths, CNV_OUT_CH_POOL)):
            self.conv_features.extend([
                QuantConv2d(channels, out_ch, KERNEL_SIZE, bias=False,
                            weight_quant=WeightQuant, weight_bit_width=weight_bits[i]),
                nn.BatchNorm2d(out_ch, eps=BN_EPS),
                QuantIdentity(act_quant=ActQuant, bit_width=act_bits[i]),
            ])
            if pool:
                self.conv_features.append(nn.MaxPool2d(POOL_SIZE))
            channels = out_ch
        widths = (channels * feature_side(h) * feature_side(w), *fc_widths)
        self.linear_features = nn.ModuleList()
        for j, out_features in enumerate(fc_widths):
            k = len(CNV_OUT_CH_POOL) + j
            self.linear_features.extend([
                QuantLinear(widths[j], out_features, bias=False,
                            weight_quant=WeightQuant, weight_bit_width=weight_bits[k]),
                nn.BatchNorm1d(out_features, eps=BN_EPS),
                QuantIdentity(act_quant=ActQuant, bit_width=act_bits[k]),
            ])
        self.linear_features.append(QuantLinear(widths[-1], num_classes, bias=False,
                                                weight_quant=WeightQuant, weight_bit_width=weight_bits[-1]))
        self.linear_features.append(PositiveScale())
        for m in self.weight_layers():
            nn.init.uniform_(m.weight.data, -1, 1)

    def weight_layers(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, (QuantConv2d, QuantLinear))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.pixel_scale - 1.0
        for module in self.conv_features:
            x = module(x)
        x = x.reshape(x.shape[0], -1)
        for module in self.linear_features:
            x = module(x)
        return x

    def clip_weights(self) -> None:
        """Keep float weights in the quantisers' range, as Brevitas' bnn_pynq trainer does."""
        for m in self.weight_layers():
            m.weight.data.clamp_(-1.0, 1.0)
