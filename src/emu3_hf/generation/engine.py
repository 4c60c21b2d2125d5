"""The Emu3 image/video token generator: one engine shared by every pipeline.

Structure (gpt-fast style): :func:`prefill` runs the prompt once and fills a KV cache; :func:`decode_step` feeds one
token per row and returns the last hidden state; :func:`visual_logits` evaluates the LM head on the visual rows of
its weight only, and only at steps where some row samples. The schedule of forced tokens (EOL/EOF/EOI/EOS) comes from
:class:`~emu3_hf.generation.grammar.VisionGrammar`, built once per call, so the loop never reads a device value.

Classifier-free guidance runs as ONE doubled batch: rows ``[0, B)`` carry the prompts, rows ``[B, 2B)`` the negative
prompts, both left-padded to one length (positions from the attention mask, ``cumsum - 1``), and every generated
token is fed to both halves. ``guidance_scale == 1`` drops the negative half.

Caches: ``"dynamic"`` (transformers ``DynamicCache``, the CPU default) or ``"static"`` (``StaticCache`` sized to the
prompt plus the generated tokens; decode masks are then fixed-shape tensors, so :func:`decode_step` is compiled:
``compile_decode``, on by default on CUDA, where it runs as CUDA graphs). ``parallel_decoding="jacobi"`` verifies a
window of draft tokens per forward pass instead (:mod:`~emu3_hf.generation.parallel`; exact: the same tokens;
either cache, compiled too).

Example:
    ```python
    >>> import torch, emu3_hf
    >>> from emu3_hf.generation import generate_image_tokens
    >>> model = emu3_hf.Emu3LMForCausalLM.from_pretrained("tests/fixtures/baai-tiny/lm").eval()
    >>> pos = torch.tensor([[1806, 64, 883, 1809, 18, 9, 19, 1808]])  # [bos] text [boi] "3*4" [img]
    >>> neg = torch.tensor([[1806, 1809, 18, 9, 19, 1808]])
    >>> out = generate_image_tokens(model, pos, negative_input_ids=neg, height=3, width=4,
    ...                             generator=torch.Generator().manual_seed(0))
    >>> out.codes.shape, out.sequences.shape  # 3 rows of (4 codes + EOL), EOF, EOI, EOS
    (torch.Size([1, 3, 4]), torch.Size([1, 26]))
    ```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, StaticCache

from ..modeling.transformers_compat import STATIC_CACHE_CAN_CROP
from ..processing.arguments import check_finite
from .budget import check_kv_cache_fits, check_sequence_fits
from .grammar import SAMPLE, SpecialIds, VisionGrammar, as_host_list, fed_length, token_ids_from_config
from .sampling import Generators, PositionNoise, SamplingConfig, guided_scores, pick_tokens
from .steps import compiled_decode_step, decode_step, decode_window, prefill, visual_logits
from .steering import RowProgress, RowUpdate, as_row_update, checked_guidance_scale, write_codes

CacheImplementation = Literal["dynamic", "static"]
ParallelDecoding = Literal["jacobi"]
DEFAULT_PARALLEL_WINDOW = 16  # draft tokens per Jacobi pass; bench/bench_parallel.py measured it (BENCHMARKS.md)
_MASK_4D_BACKENDS = ("eager", "sdpa")  # backends that accept an additive (B, 1, q, kv) float mask as is


@dataclass
class ImageTokensOutput:
    """What :func:`generate_image_tokens` returns.

    Attributes:
        codes: (B, H, W) int64 code grids for images, (B, T, H, W) for videos (``num_frames > 1``); with mixed sizes
            the grids are padded to the largest H and W with -1 (see :meth:`grids`).
        sequences: (B, L + N) the prompt ids as given, followed by the generated ids.
        generated_ids: (B, N) the generated ids alone (rows that finish early are padded with the pad id).
        image_sizes: (B, 2) int64 token grid (h, w) of each row.
    """

    codes: torch.Tensor
    sequences: torch.Tensor
    generated_ids: torch.Tensor
    image_sizes: torch.Tensor

    def grids(self) -> list[torch.Tensor]:
        """One unpadded grid per row: (h, w), or (T, h, w) for videos."""
        return [code[..., :h, :w] for code, (h, w) in zip(self.codes, self.image_sizes.tolist())]


def resolve_decoding(
    device: torch.device,
    cache_implementation: CacheImplementation | None,
    compile_decode: bool | None,
    parallel_decoding: ParallelDecoding | None,
    parallel_window: int | None = None,
) -> tuple[str, bool]:
    """The (cache, compile) pair a call runs with; None picks the device default: on CUDA a compiled decode step
    (or Jacobi window) over the static cache, elsewhere eager over the dynamic cache (compiling did not pay on the
    CPU, BENCHMARKS.md). Jacobi windows default to the dynamic cache where the installed transformers cannot roll a
    static cache back (< 5.24). ``parallel_window`` (None = :data:`DEFAULT_PARALLEL_WINDOW`) is checked here too, so
    pipelines refuse a bad value before any work."""
    if parallel_decoding not in (None, "jacobi"):
        raise ValueError(f"parallel_decoding must be None or 'jacobi', got {parallel_decoding!r}.")
    if parallel_window is not None and (
        isinstance(parallel_window, bool) or not isinstance(parallel_window, int) or parallel_window < 1
    ):
        raise ValueError(f"parallel_window must be an int >= 1 (draft tokens per forward pass) or None (default "
                         f"{DEFAULT_PARALLEL_WINDOW}), got {parallel_window!r}.")
    if cache_implementation not in (None, "dynamic", "static"):
        raise ValueError(f"cache_implementation must be 'dynamic', 'static' or None, got {cache_implementation!r}.")
    if compile_decode not in (None, True, False):
        raise TypeError(f"compile_decode must be True, False or None (device default), got {compile_decode!r}.")
    if parallel_decoding and cache_implementation is None and not STATIC_CACHE_CAN_CROP:
        # this transformers cannot roll a static cache back: default Jacobi windows to the dynamic cache (eager)
        cache_implementation = "static" if compile_decode else "dynamic"
    if compile_decode is None:
        compile_decode = device.type == "cuda" and cache_implementation != "dynamic"
    if compile_decode and cache_implementation == "dynamic":
        raise ValueError(
            "compile_decode=True needs fixed shapes: pass cache_implementation='static' (or None), or "
            "compile_decode=False."
        )
    return cache_implementation or ("static" if compile_decode else "dynamic"), bool(compile_decode)


# ---- batch assembly ------------------------------------------------------------------------------------------------


def _left_pad(ids: torch.Tensor, mask: torch.Tensor, length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    extra = length - ids.shape[1]
    if extra == 0:
        return ids, mask
    return (
        nn.functional.pad(ids, (extra, 0), value=pad_id),
        nn.functional.pad(mask, (extra, 0), value=0),
    )


def build_guidance_batch(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    negative_input_ids: torch.Tensor | None,
    negative_attention_mask: torch.Tensor | None,
    guidance_scale: float,
    pad_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack prompts and negative prompts into one left-padded batch (2B, L) with its mask; (B, L) without CFG.

    A single negative prompt (1, Ln) is shared by every row.
    """
    batch = input_ids.shape[0]
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.device).long()
    if guidance_scale == 1.0:
        return input_ids, mask
    if negative_input_ids is None:
        raise ValueError(
            f"guidance_scale={guidance_scale} needs `negative_input_ids` (the unconditional prompt, laid out like the "
            "prompt: [bos] text [boi] 'H*W' [img]); pass them, or guidance_scale=1.0 to generate without guidance."
        )
    negative_input_ids = negative_input_ids.to(input_ids.device).long()
    neg_mask = (
        torch.ones_like(negative_input_ids)
        if negative_attention_mask is None
        else negative_attention_mask.to(input_ids.device).long()
    )
    if negative_input_ids.shape[0] == 1 and batch > 1:
        negative_input_ids, neg_mask = negative_input_ids.expand(batch, -1), neg_mask.expand(batch, -1)
    if negative_input_ids.shape[0] != batch:
        raise ValueError(
            f"Got {negative_input_ids.shape[0]} negative prompts for {batch} prompts; pass one per prompt or one for all."
        )
    length = max(input_ids.shape[1], negative_input_ids.shape[1])
    pos_ids, pos_mask = _left_pad(input_ids, mask, length, pad_token_id)
    neg_ids, neg_mask = _left_pad(negative_input_ids, neg_mask, length, pad_token_id)
    return torch.cat([pos_ids, neg_ids]), torch.cat([pos_mask, neg_mask])


class _DecodeMasks:
    """Per-step attention masks for the decode loop, precomputed once (no per-step host work).

    dynamic + no padding: None (the backend's own causal path); dynamic: a view ``full[..., :kv]`` of one
    precomputed additive mask; static: the fixed-size additive mask with the not-yet-written slots masked, from a
    device-side counter. Backends other than eager/sdpa get the 2-D key mask and build their own.
    """

    def __init__(self, key_mask: torch.Tensor, prompt_len: int, static: bool, backend: str, dtype: torch.dtype):
        self.prompt_len, self.static = prompt_len, static
        self.use_4d = backend in _MASK_4D_BACKENDS
        self.no_padding = bool(key_mask.all())  # the one host read of the masks, before the loop
        self.key_mask = key_mask  # (B2, S) 1 = attend; S = prompt + fed tokens
        self.neg = torch.finfo(dtype).min
        self.additive = torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device)
        self.additive = self.additive.masked_fill(key_mask == 0, self.neg)[:, None, None, :]  # (B2, 1, 1, S)
        self.slots = torch.arange(key_mask.shape[1], device=key_mask.device)  # (S,)

    def at(self, step: int, cache_index: torch.Tensor) -> torch.Tensor | None:
        """Mask for feeding the token of ``step``; ``cache_index`` (0-d device tensor) = its slot in the cache."""
        kv = self.prompt_len + step + 1
        if not self.static:
            if self.no_padding:
                return None
            return self.additive[..., :kv] if self.use_4d else self.key_mask[:, :kv]
        if not self.use_4d:
            return self.key_mask * (self.slots <= cache_index)
        return self.additive.masked_fill(self.slots > cache_index, self.neg)


def _make_cache(model: nn.Module, kind: str, max_len: int) -> Cache:
    if kind == "dynamic":
        return DynamicCache(config=model.config)
    if kind == "static":
        return StaticCache(config=model.config, max_cache_len=max_len)
    raise ValueError(f"cache_implementation must be 'dynamic' or 'static', got {kind!r}.")


def _check_generator(generator, batch: int) -> Generators:
    """One generator (or None) for the batch, or a list of exactly one per row (diffusers' convention)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch or not all(isinstance(g, torch.Generator) for g in generator):
            raise ValueError(
                f"Got a list of {len(generator)} generators for {batch} rows: pass one torch.Generator per generated "
                "image (prompts x num_images_per_prompt), or a single torch.Generator for the whole batch."
            )
        return list(generator)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or a list of them, got {type(generator).__name__}.")
    return generator


# ---- the engine ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate_image_tokens(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    height: int | Sequence[int] | torch.Tensor,
    width: int | Sequence[int] | torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    negative_input_ids: torch.Tensor | None = None,
    negative_attention_mask: torch.Tensor | None = None,
    guidance_scale: float = 3.0,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = 2048,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    num_frames: int = 1,
    callback: Callable[[RowProgress], RowUpdate | dict | None] | None = None,
    cache_implementation: CacheImplementation | None = None,
    token_ids: SpecialIds | None = None,
    compile_decode: bool | None = None,
    parallel_decoding: ParallelDecoding | None = None,
    parallel_window: int | None = None,
) -> ImageTokensOutput:
    """Generate Emu3 image (or video) tokens after prompts that end with the image token.

    Args:
        model: an Emu3 causal LM (``Emu3LMForCausalLM``): a decoder at ``model.base_model`` and an LM head at
            ``model.get_output_embeddings()``. Special ids are read from ``model.config`` (or ``token_ids``).
        input_ids: (B, L) prompts, left-padded, each ending with ``img_token_id`` (``[bos] text [boi] 'H*W' [img]``).
        height, width: token grid, an int or one per row (a list or a (B,) tensor) for mixed sizes.
        attention_mask: (B, L) 1 = token, 0 = left padding; default all ones.
        negative_input_ids, negative_attention_mask: (B, Ln) or (1, Ln) unconditional prompts for guidance.
        guidance_scale: CFG weight ``g`` in ``uncond + g * (cond - uncond)``; 1.0 disables guidance.
        do_sample, temperature, top_k, top_p: sampling over the visual tokens (greedy when ``do_sample=False``).
        generator: the only source of randomness: two seed words are drawn from it once per call and the noise of
            image ``i`` at step ``t`` is a hash of (words, i, t) (:class:`~emu3_hf.generation.sampling.PositionNoise`);
            on the model's device or on the CPU. A list of one generator per row makes row ``i`` equal to its prompt
            generated alone with generator ``i`` (diffusers' convention).
        num_frames: latent frames to generate, each closed by EOF (videos); 1 for an image.
        callback: called with a :class:`RowProgress` each time an image row is completed; it may return a
            :class:`RowUpdate` (edited codes, a new guidance scale, or stop).
        cache_implementation: "dynamic" or "static" (fixed shapes, for compiled decoding); None = "static" when
            the decode step is compiled, else "dynamic".
        token_ids: override the special ids (for models whose config does not carry them).
        compile_decode: run the decode step (or the Jacobi window) under ``torch.compile`` (CUDA graphs on a GPU)
            over the static cache; None = on for CUDA devices (unless ``cache_implementation="dynamic"``), off
            elsewhere. The first call per shape compiles (seconds to minutes); greedy tokens equal the eager path's.
        parallel_decoding: "jacobi" = Jacobi decoding (:mod:`~emu3_hf.generation.parallel`): each forward pass
            verifies up to ``parallel_window`` draft tokens; exact (the same tokens as sequential decoding for the
            same generator, greedy or sampled: the sampling noise is keyed by position). None = one token per
            forward pass. With the static cache each pass feeds exactly ``parallel_window`` tokens.
        parallel_window: draft tokens verified per forward pass with ``parallel_decoding``; None =
            :data:`DEFAULT_PARALLEL_WINDOW`.

    Returns:
        :class:`ImageTokensOutput` with ``codes`` (B, H, W) or (B, T, H, W), ``sequences``, ``generated_ids`` and
        ``image_sizes``.
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}; add input_ids[None].")
    check_finite("guidance_scale", guidance_scale)
    head = model.get_output_embeddings()
    decoder = model.base_model
    device = head.weight.device
    ids = token_ids or token_ids_from_config(model.config)
    if ids.visual_offset + ids.codebook_size > head.weight.shape[0]:
        raise ValueError(
            f"The visual block [{ids.visual_offset}, {ids.visual_offset + ids.codebook_size}) exceeds the LM head's "
            f"{head.weight.shape[0]} rows; check visual_token_offset / codebook_size in the config."
        )
    batch = input_ids.shape[0]
    cache_implementation, compile_decode = resolve_decoding(device, cache_implementation, compile_decode,
                                                            parallel_decoding, parallel_window)
    parallel_window = DEFAULT_PARALLEL_WINDOW if parallel_window is None else parallel_window
    generator = _check_generator(generator, batch)
    sampling = SamplingConfig(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p)
    input_ids = input_ids.to(device).long()
    # Refuse what cannot fit before building anything of the request's size (pure host arithmetic).
    heights, widths = as_host_list(height, "height", batch), as_host_list(width, "width", batch)
    prompt_len = max(input_ids.shape[1], negative_input_ids.shape[1] if negative_input_ids is not None else 0)
    check_sequence_fits(model.config.max_position_embeddings, prompt_len, heights, widths, num_frames)

    # 1. One batch of prompts (+ negative prompts), left-padded; the cache holds it plus every fed token.
    prompt_ids, prompt_mask = build_guidance_batch(
        input_ids, attention_mask, negative_input_ids, negative_attention_mask, guidance_scale, ids.pad
    )  # (B2, L)
    if not bool(prompt_mask[:, -1].all()):
        raise ValueError("Prompts must be LEFT-padded (the last column of every attention mask must be 1).")
    prompt_len, fed = prompt_ids.shape[1], fed_length(heights, widths, num_frames)
    total = prompt_len + fed
    check_kv_cache_fits(model.config, prompt_ids.shape[0], total, head.weight.dtype, device)  # before the grammar
    grammar = VisionGrammar.build(ids, heights, widths, num_frames, batch_size=batch).to(device)
    # sampling noise keyed by (seed, image, step, code): every decoding scheme draws the same tokens
    noise = PositionNoise.from_generator(generator, batch, ids.codebook_size, device) if do_sample else None
    key_mask = torch.cat([prompt_mask, prompt_mask.new_ones(prompt_mask.shape[0], fed)], dim=1)  # (B2, total)
    static = cache_implementation == "static"
    jacobi, cache_len = None, total
    if parallel_decoding is not None:
        from .parallel import JacobiDecoder  # imported when used: most calls decode sequentially

        window = compiled_decode_step(device, decode_window) if compile_decode else decode_window
        jacobi = JacobiDecoder(model, ids, grammar, sampling, noise, parallel_window, static, window)
        cache_len += jacobi.cache_room  # fixed-size windows run up to `parallel_window` steps past the end
    cache = _make_cache(model, cache_implementation, cache_len)
    masks = _DecodeMasks(key_mask, prompt_len, static, model.config._attn_implementation, head.weight.dtype)
    first_position = prompt_mask.sum(-1, keepdim=True)  # (B2, 1) position of the first generated token
    cache_index = torch.tensor(prompt_len, device=device)  # slot of the next fed token (static masks)

    # 2. Prefill.
    hidden = prefill(decoder, prompt_ids, prompt_mask, cache, cache_len if static else prompt_len)  # (B2, D)
    if jacobi is not None:
        generated = jacobi.decode(hidden, cache, key_mask, first_position, guidance_scale, callback)
        return _output(grammar, input_ids, generated, num_frames)
    step_fn = compiled_decode_step(device) if compile_decode else decode_step

    # 3. Decode: sample where the grammar says so, force everything else; feed each token to both CFG halves.
    generated = torch.full((batch, grammar.num_steps), ids.pad, dtype=torch.long, device=device)  # (B, N)
    row_steps = set(grammar.row_steps) if callback is not None else set()
    halves = prompt_ids.shape[0] // batch
    scale, done = guidance_scale, grammar.num_steps
    for step in range(grammar.num_steps):
        forced = grammar.forced[:, step]  # (B,)
        if grammar.sample_steps[step]:
            logits = visual_logits(hidden, head, ids)  # (B2, K)
            scores = guided_scores(logits if scale != 1.0 else logits[:batch], scale)  # (B, K)
            token = pick_tokens(scores, sampling, noise, step) + ids.visual_offset  # (B,)
            if grammar.mixed_steps[step]:
                token = torch.where(forced == SAMPLE, token, forced)
        else:
            token = forced  # no LM head at forced steps
        generated[:, step] = token
        if step in row_steps:
            progress = RowProgress(step=step, rows_done=grammar.rows_done[step], total_rows=grammar.total_rows,
                                   generated_ids=generated[:, : step + 1], grammar=grammar, guidance_scale=scale)
            update = as_row_update(callback(progress))
            if update.guidance_scale is not None:
                scale = checked_guidance_scale(update.guidance_scale, halves)
            if update.codes is not None:
                first = write_codes(grammar, generated, step + 1, update.codes)
                if first is not None and first < min(step, fed):  # ids already in the KV cache changed: re-feed
                    _refeed(decoder, cache, static, generated[:, first:step].repeat(halves, 1),
                            first_position + torch.arange(first, step, device=device), key_mask, prompt_len, first)
                token = generated[:, step]
            if update.stop:
                done = step + 1
                break
        if step < fed:
            tokens = token.repeat(halves)[:, None]  # (B2, 1): the same token for the prompt and its negative
            hidden = step_fn(decoder, tokens, first_position + step, cache, masks.at(step, cache_index))
            cache_index += 1

    return _output(grammar, input_ids, generated[:, :done], num_frames)


def _output(grammar: VisionGrammar, input_ids: torch.Tensor, generated: torch.Tensor, num_frames: int):
    codes = grammar.codes_from_tokens(generated)  # (B, T, Hmax, Wmax), -1 where a stopped call generated nothing
    return ImageTokensOutput(
        codes=codes[:, 0] if num_frames == 1 else codes,
        sequences=torch.cat([input_ids, generated], dim=1),
        generated_ids=generated,
        image_sizes=torch.stack([grammar.heights, grammar.widths], dim=1),
    )


def _refeed(decoder, cache, static, tokens, positions, key_mask, prompt_len: int, first: int) -> None:
    """Drop the cached keys/values from generated step ``first`` on and feed ``tokens`` (B2, n) in their place."""
    if static:
        raise ValueError(
            "Editing codes that are already in the KV cache needs cache_implementation='dynamic' (a static cache "
            "cannot be rolled back)."
        )
    cache.crop(-(cache.get_seq_length() - prompt_len - first))  # negative = how many tokens to remove
    length = prompt_len + first + tokens.shape[1]
    decoder(input_ids=tokens, attention_mask=key_mask[:, :length], position_ids=positions.expand(tokens.shape[0], -1),
            cache=cache, use_cache=True)


__all__ = [
    "ImageTokensOutput",
    "RowProgress",
    "RowUpdate",
    "build_guidance_batch",
    "compiled_decode_step",
    "decode_step",
    "decode_window",
    "generate_image_tokens",
    "prefill",
    "visual_logits",
]
