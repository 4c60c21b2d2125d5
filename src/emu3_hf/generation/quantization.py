"""Weight-only quantization of the Emu3 LM for generation, through torchao (an optional dependency: ``emu3-hf[quant]``).

Each decode step reads every weight of the LM once, so on a memory-bound device the step time follows the bytes of
the weights: int8 weights are 4x smaller than float32 (2x smaller than bf16). Activations stay in the model's dtype.

- ``"int8"``: torchao ``Int8WeightOnlyConfig`` (symmetric, one scale per output row). On the CPU, torchao's eager
  kernel converts the weight back per call, so the speed-up needs the compiled decode step (inductor fuses the
  conversion into the matmul): ``generate_image_tokens(..., compile_decode=True)``.
- ``"int4"``: torchao ``Int4WeightOnlyConfig`` (tinygemm packing, bf16) on CUDA; on other devices
  ``IntxWeightOnlyConfig(torch.int4)``, whose values are int4 but stored one per byte (memory of int8).

bitsandbytes needs no helper: ``from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True))``
(CUDA), like transformers' ``TorchAoConfig``, which quantizes the decoder but leaves the LM head as it is.

Example:
    ```python
    >>> import emu3_hf
    >>> from emu3_hf.generation.quantization import quantize_weights, weight_bytes
    >>> model = emu3_hf.Emu3LMForCausalLM.from_pretrained("tests/fixtures/baai-tiny/lm").eval()
    >>> before = weight_bytes(model)
    >>> model = quantize_weights(model, "int8")
    >>> round(before / weight_bytes(model), 1)  # the tiny model's embedding (float32) is a large share
    1.8
    ```
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

QuantizedWeights = Literal["int8", "int4"]


def _torchao_config(weights: str, device: torch.device, group_size: int):
    """torchao's ``quantize_`` and the config for ``weights`` on ``device``."""
    try:
        from torchao.quantization import (
            Int4WeightOnlyConfig,
            Int8WeightOnlyConfig,
            IntxWeightOnlyConfig,
            PerGroup,
            quantize_,
        )
    except ImportError as error:
        raise ImportError(
            "Weight-only quantization uses torchao: `pip install 'emu3-hf[quant]'` (or `pip install 'torchao>=0.18' 'diffusers>=0.37'`)."
        ) from error
    if weights == "int8":
        return quantize_, Int8WeightOnlyConfig()
    if device.type == "cuda":
        return quantize_, Int4WeightOnlyConfig(group_size=group_size, int4_packing_format="tile_packed_to_4d")
    return quantize_, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size))


def quantize_weights(
    model: nn.Module, weights: QuantizedWeights = "int8", *, include_head: bool | None = None, group_size: int = 128
) -> nn.Module:
    """Quantize the linear layers of an Emu3 causal LM in place (weight-only); returns the model.

    Args:
        model: an ``Emu3LMForCausalLM`` (any module whose linear layers should be quantized works), on the device it
            will run on (int4 picks its packing from the device; CUDA int4 needs bf16 weights).
        weights: "int8" (per-row scales) or "int4" (per-group scales, ``group_size`` input columns a group).
        include_head: also quantize the LM head (the engine reads only its visual rows; a sliced int8 weight stays
            int8). None = yes for int8; no for int4, whose packed CUDA layout stores rows in tiles of 8, so the
            visual rows (from offset 151854 in BAAI's vocabulary) cannot be sliced out exactly. The embedding is
            never quantized.
        group_size: int4 group size (a divisor of the hidden size; torchao supports 32, 64, 128, 256).

    Raises:
        ValueError: an unknown ``weights`` or a group size that does not divide the layers' input size.
        ImportError: torchao is not installed.
    """
    if weights not in ("int8", "int4"):
        raise ValueError(f"weights must be 'int8' or 'int4', got {weights!r}.")
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layers to quantize (already quantized?).")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    include_head = weights == "int8" if include_head is None else include_head
    if weights == "int4":
        bad = sorted({m.in_features for m in linears.values() if m.in_features % group_size})
        if bad:
            raise ValueError(f"group_size={group_size} does not divide the input size(s) {bad}; pick a divisor.")
    quantize_, config = _torchao_config(weights, next(iter(linears.values())).weight.device, group_size)
    quantize_(model, config, filter_fn=lambda module, fqn: isinstance(module, nn.Linear) and
              (include_head or module is not head))  # fmt: skip
    return model


def _tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes held by a tensor; a tensor subclass (torchao) is counted by its inner tensors."""
    if hasattr(tensor, "__tensor_flatten__") and type(tensor) not in (torch.Tensor, nn.Parameter):
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def weight_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers as stored (quantized data + scales for quantized weights)."""
    seen, total = set(), 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:  # tied weights count once
            seen.add(id(tensor))
            total += _tensor_bytes(tensor)
    return total


__all__ = ["QuantizedWeights", "quantize_weights", "weight_bytes"]
