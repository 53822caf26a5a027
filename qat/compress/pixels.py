"""Input-pixel pruning: keep only the pixels that carry information (MNIST's border carries none).

The kept pixels are the ``keep`` pixels of highest variance over the training split (a pixel
that is always 0 has variance 0). The pruned model is an MLP over those K pixels: its first
layer keeps the weight columns of the kept pixels, the rest is unchanged, then fine-tuned.

How the accelerator gets only the kept pixels: the host gathers them
(``host.packing.gather_pixels``) before packing, so the input DMA moves K values per image,
not H*W. The checkpoint records the indices (``DatasetInfo.kept_pixels``; its
``image_shape`` becomes (1, 1, K)), the build feeds every stage the gathered images
(``flows.build.Build.dataset``), verification and the test vectors use them, and the deploy
package's ``deploy.json`` lists ``kept_pixels`` for the host. MLPs only: a convolution
needs its image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from host.errors import ConfigError
from qat.compress.base import CompressContext, Technique, register

if TYPE_CHECKING:
    from qat.models import ModelSpec
    from qat.train import Checkpoint, DatasetInfo


def informative_pixels(images: np.ndarray, keep: int) -> tuple[int, ...]:
    """Indices (ascending) of the ``keep`` flattened pixels of highest variance over ``images``;
    ties go to the lower index."""
    var = images.reshape(len(images), -1).astype(np.float64).var(axis=0)
    order = np.argsort(-var, kind="stable")[:keep]
    return tuple(int(i) for i in np.sort(order))


@register
@dataclass(frozen=True)
class PrunePixels(Technique):
    """Keep the ``keep`` highest-variance input pixels (or ``ratio`` of them removed) and fine-tune."""

    name: ClassVar[str] = "prune_pixels"
    fpga_effect: ClassVar[str] = "io"

    keep: int | None = None  # number of pixels kept; or
    ratio: float | None = None  # share of pixels removed, in [0, 1)

    def kept_count(self, pixels: int) -> int:
        return self.keep if self.keep is not None else round(pixels * (1 - self.ratio))

    def check(self, spec: "ModelSpec", data: "DatasetInfo") -> None:
        if spec.arch == "cnv":
            raise ConfigError("prune_pixels: CNV's convolutions need whole images; prune pixels of an MLP "
                              "(tfc, sfc, lfc, lenet)")
        if (self.keep is None) == (self.ratio is None):
            raise ConfigError("prune_pixels: give option 'keep' (pixels kept) or 'ratio' (share removed), exactly one")
        if self.ratio is not None and not 0 <= self.ratio < 1:
            raise ConfigError(f"prune_pixels: option 'ratio' must be in [0, 1), got {self.ratio}")
        pixels = int(np.prod(data.image_shape))
        k = self.kept_count(pixels)
        if not 1 <= k <= pixels:
            raise ConfigError(f"prune_pixels: option '{'keep' if self.keep is not None else 'ratio'}' keeps {k} of "
                              f"{pixels} pixels; keep 1 to {pixels}")

    def apply(self, ckpt: "Checkpoint", ctx: CompressContext) -> "Checkpoint":
        from qat.train import train

        pixels = int(np.prod(ckpt.data.image_shape))
        local = informative_pixels(ctx.ds.train.images, self.kept_count(pixels))  # indices into ctx.ds's images
        base = ctx.base_ds or ctx.ds
        kept = local if ctx.ds.kept_pixels is None else tuple(ctx.ds.kept_pixels[i] for i in local)
        ds = base.gather(kept)
        state = dict(ckpt.state_dict)
        first = _first_weight(state)
        state[first] = state[first][:, torch.tensor(local)]
        return train(ckpt.spec, ds, ctx.train, progress=ctx.progress, hooks=ctx.hooks, init_state=state)

    def report(self, ckpt: "Checkpoint") -> dict:
        return {"kept_pixels": len(ckpt.data.kept_pixels or ()), "image_shape": list(ckpt.data.image_shape)}


def _first_weight(state: dict) -> str:
    """The first QuantLinear's weight key (an MLP's features.2.weight)."""
    keys = [k for k, v in state.items() if k.endswith(".weight") and v.ndim == 2]
    return keys[0]
