"""Output dataclasses of the Emu3 pipelines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class Emu3PipelineOutput(BaseOutput):
    """Output of :class:`~emu3_hf.pipelines.Emu3Pipeline`.

    Attributes:
        images: ``output_type="pil"``: a list of PIL images; ``"np"``: float32 (B, H, W, 3) in [0, 1];
            ``"pt"``: float32 (B, 3, H, W) in [0, 1] (a list of arrays/tensors when sizes differ in the batch);
            ``"tokens"``: the code grids, same as ``codes``.
        codes: (B, h, w) int64 visual token codes (the VQ's input), padded with -1 where rows of a mixed-size batch
            are smaller than the largest grid.
        image_sizes: (B, 2) int64 token grid (h, w) of each image.
    """

    images: Union[list[PIL.Image.Image], np.ndarray, torch.Tensor, list]
    codes: torch.Tensor
    image_sizes: torch.Tensor


__all__ = ["Emu3PipelineOutput"]
