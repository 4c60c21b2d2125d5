"""Refuse a generation request that cannot fit, before any tensor of its size exists.

Two limits: positions (the prompt plus every generated token, EOL/EOF/EOI/EOS included, must stay within the
model's ``max_position_embeddings``) and memory (the KV cache of the whole request, estimated from the config,
the dtype and the batch, must fit in what the device has free). Both are pure arithmetic on host integers and run
before the vision grammar (whose schedule grows with the request) is built, so a request such as
``image_area=10**9`` is refused in microseconds instead of allocating until the process dies.

Example:
    ```python
    >>> from emu3_hf.generation.budget import largest_square_grid
    >>> largest_square_grid(max_positions=9216, prompt_length=20, num_frames=1)  # BAAI's 8B model
    95
    ```
"""

from __future__ import annotations

import math

import torch

from .grammar import sequence_length


def largest_square_grid(max_positions: int, prompt_length: int, num_frames: int = 1) -> int:
    """The largest ``n`` such that an ``n x n`` grid of ``num_frames`` frames fits after the prompt (0 if none)."""
    budget = max_positions - prompt_length - 2  # EOI, EOS
    per_frame = budget // num_frames - 1  # EOF; the rest holds n rows of n codes + EOL: n * (n + 1)
    if per_frame < 2:
        return 0
    n = int((math.sqrt(1 + 4 * per_frame) - 1) / 2)
    while (n + 1) * (n + 2) <= per_frame:
        n += 1
    while n > 0 and n * (n + 1) > per_frame:
        n -= 1
    return n


def check_sequence_fits(
    max_positions: int, prompt_length: int, heights: list[int], widths: list[int], num_frames: int
) -> None:
    """Raise when the longest row's prompt + generated tokens exceed the model's positions."""
    longest = max(sequence_length(h, w, num_frames) for h, w in zip(heights, widths))
    if prompt_length + longest <= max_positions:
        return
    h, w = max(zip(heights, widths), key=lambda hw: sequence_length(hw[0], hw[1], num_frames))
    side = largest_square_grid(max_positions, prompt_length, num_frames)
    raise ValueError(
        f"A {h}x{w} token grid x {num_frames} frame(s) needs {longest} generated tokens after a {prompt_length}-token "
        f"prompt, beyond the model's max_position_embeddings={max_positions}. The largest square grid that fits is "
        f"{side}x{side} tokens; lower image_area / height / width (or num_frames)."
    )


def kv_cache_bytes(config, rows: int, length: int, dtype: torch.dtype) -> int:
    """Bytes of keys + values for ``rows`` sequences of ``length`` tokens in every layer."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim
    return rows * length * per_token * torch.empty((), dtype=dtype).element_size()


def free_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on ``device`` (None when it cannot be told). On the CPU: the machine's available
    memory, or less when the process runs under an address-space limit (``ulimit -v``, ``RLIMIT_AS``)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            import psutil
        except ImportError:  # accelerate depends on psutil, so this is rare
            return None
        free = psutil.virtual_memory().available
        try:
            import resource
        except ImportError:  # Windows
            return free
        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            free = min(free, max(0, limit - psutil.Process().memory_info().vms))
        return free
    return None


def check_kv_cache_fits(config, rows: int, length: int, dtype: torch.dtype, device: torch.device) -> None:
    """Raise when the request's KV cache alone would not fit in the device's free memory."""
    need, free = kv_cache_bytes(config, rows, length, dtype), free_bytes(device)
    if free is None or need <= free:
        return
    raise ValueError(
        f"This request's KV cache needs {need / 2**30:.1f} GiB ({rows} sequences x {length} tokens, "
        f"{config.num_hidden_layers} layers, {dtype}) but {device} has {free / 2**30:.1f} GiB free. Generate fewer "
        "images at once (num_images_per_prompt, the number of prompts), a smaller grid, or guidance_scale=1.0 "
        "(halves the rows)."
    )


__all__ = ["check_kv_cache_fits", "check_sequence_fits", "free_bytes", "kv_cache_bytes", "largest_square_grid"]
