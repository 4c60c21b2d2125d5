"""Text-to-image with Emu3, as a diffusers pipeline around the shared generation engine.

The prompts are laid out by :class:`~emu3_hf.processing.processing_emu3.Emu3MultimodalProcessor` (BAAI's
``[BOS] text [BOI] "h*w" [IMG]``), the tokens come from :func:`emu3_hf.generation.generate_image_tokens`
(grammar as tensors, classifier-free guidance as one doubled batch, seeded sampling), and the VQ decodes the code
grids; pixels are post-processed exactly as BAAI's image processor does.

BAAI's README appends :data:`BAAI_POSITIVE_PROMPT_SUFFIX` to every prompt and guides with
:data:`BAAI_NEGATIVE_PROMPT`; the pipeline uses that negative prompt by default and leaves the prompt as given.

Example:
    ```python
    >>> import torch
    >>> from emu3_hf.pipelines import Emu3Pipeline, BAAI_POSITIVE_PROMPT_SUFFIX
    >>> pipe = Emu3Pipeline.from_baai("BAAI/Emu3-Gen", "BAAI/Emu3-VisionTokenizer", torch_dtype=torch.bfloat16)
    >>> pipe = pipe.to("cuda")
    >>> image = pipe("a portrait of young girl." + BAAI_POSITIVE_PROMPT_SUFFIX, ratio="1:1",
    ...              generator=torch.Generator("cuda").manual_seed(0)).images[0]
    >>> image.save("girl.png")
    ```
"""

from typing import Any, Callable, Sequence

import numpy as np
import PIL.Image
import torch
from diffusers.callbacks import PipelineCallback

from ..generation.engine import resolve_decoding
from .base import (
    BAAI_GUIDANCE_SCALE,
    BAAI_NEGATIVE_PROMPT,
    OUTPUT_TYPES,
    Emu3VisualPipelineBase,
    callback_tensor_inputs,
    format_uint8_outputs,
    onload,
)
from .outputs import Emu3PipelineOutput

BAAI_POSITIVE_PROMPT_SUFFIX = " masterpiece, film grained, best quality."
"""Quality suffix BAAI's README appends to every image-generation prompt."""


class Emu3Pipeline(Emu3VisualPipelineBase):
    r"""Text-to-image generation with Emu3 (BAAI ``Emu3-Gen``).

    Components:
        model ([`Emu3LMForCausalLM`]): the language model that writes the visual tokens.
        vq_model ([`Emu3VisionVQModel`]): the VQ vision tokenizer that turns code grids into pixels.
        tokenizer ([`Emu3Tokenizer`]): the text tokenizer (Qwen BPE + Emu3's vision tokens).
        image_processor ([`Emu3VisionVQImageProcessor`]): pixel post-processing (BAAI's, exactly).

    Optional components: none.

    The shared parts (loading with :meth:`from_baai`, saving, LoRA adapters, guidance, the row callback and how it
    steers) come from :class:`~emu3_hf.pipelines.base.Emu3VisualPipelineBase`; the video and chat pipelines are
    siblings over the same components, not subclasses.

    Callback tensors (``callback_on_step_end_tensor_inputs``):
        ``"codes"``: (B, h, w) partial code grids, -1 where not generated yet (preview them with
        :meth:`decode_codes`); ``"generated_ids"``: (B, n) ids generated so far. The callback steers with what it
        returns: ``{"codes": edited}`` (the rest is generated from the edited codes), ``{"guidance_scale": 1.0}``
        (from the next row), ``{"stop": True}`` (return what exists), or a :class:`~emu3_hf.generation.RowUpdate`.

    Example:
        ```python
        >>> pipe = Emu3Pipeline.from_pretrained("path/to/emu3-pipeline")  # a folder written by save_pretrained
        >>> out = pipe(["a red circle", "a blue square"], ratio=["1:1", "16:9"], num_images_per_prompt=2,
        ...            generator=torch.Generator().manual_seed(0))
        >>> len(out.images), out.codes.shape[0]
        (4, 4)
        ```
    """

    @torch.no_grad()
    def decode_codes(
        self, codes: torch.Tensor, image_sizes: torch.Tensor | None = None, output_type: str = "pil"
    ) -> list[PIL.Image.Image] | np.ndarray | torch.Tensor | list:
        """Decode code grids (B, h, w) with the VQ into images, post-processed like BAAI's image processor.

        ``image_sizes`` (B, 2) crops padded grids of a mixed-size batch. Codes of -1 (not generated yet, in the
        partial grids a callback receives) are drawn as code 0, so partial grids can be previewed.

        Example:
            ```python
            >>> out = pipe("a cat", output_type="tokens")
            >>> pipe.decode_codes(out.codes, out.image_sizes)[0].save("cat.png")
            ```
        """
        if codes.ndim != 3:
            raise ValueError(f"codes must be (B, h, w), got shape {tuple(codes.shape)}.")
        sizes = image_sizes.tolist() if image_sizes is not None else [list(codes.shape[1:])] * codes.shape[0]
        onload(self.vq_model)
        vq = self.vq_model
        uint8 = []
        for row, (h, w) in enumerate(sizes):
            # one grid at a time: convolution kernels may round differently at another batch size, and an image's
            # pixels must not depend on the batch it was generated in
            grid = codes[row : row + 1, :h, :w].clamp_min(0).to(vq.device)  # (1, h, w)
            pixels = vq.decode(grid).float().cpu()  # (1, 3, H, W), about [-1, 1]
            uint8.append(self.image_processor.postprocess(pixels, return_tensors="np")["pixel_values"][0])  # (H, W, 3)
        return format_uint8_outputs(uint8, output_type)

    # ------------------------------------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        ratio: str | Sequence[str] = "1:1",
        image_area: int | None = None,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        do_sample: bool | None = None,
        top_k: int | None = 2048,
        top_p: float = 1.0,
        temperature: float = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[["Emu3Pipeline", int, int, dict], Any] | PipelineCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("codes",),
        prompt_ids: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_ids: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        cache_implementation: str | None = None,
        compile_decode: bool | None = None,
        parallel_decoding: str | None = None,
        parallel_window: int | None = None,
    ) -> Emu3PipelineOutput | tuple:
        r"""Generate images from text.

        Args:
            prompt: one prompt or a list (or pass ``prompt_ids`` from the processor instead).
            negative_prompt: the guidance prompt(s); default :data:`BAAI_NEGATIVE_PROMPT`. Ignored when
                ``guidance_scale == 1``.
            height, width: image size in pixels, multiples of the VQ's spatial factor; when left out, ``ratio``
                (``"w:h"``, one or one per prompt) and ``image_area`` (pixels; default the LM config's) set the
                size with BAAI's rule.
            guidance_scale: classifier-free guidance weight; 1.0 disables it. Default: see
                :meth:`recommended_sampling` (BAAI's 3.0 unless the LM recommends its own).
            num_images_per_prompt: images generated for each prompt.
            generator: a ``torch.Generator`` (on the CPU or the model's device) for reproducible sampling, or a list
                of one per image: then image ``i`` equals its prompt generated alone with generator ``i``. Without
                one, each sampling call draws a fresh seed (torch's global random state is never used).
            do_sample, top_k, top_p, temperature: token sampling (BAAI: sampling with top-k 2048); greedy when
                ``do_sample=False``. ``do_sample`` defaults as :meth:`recommended_sampling` says (BAAI: True).
            output_type: "pil", "np" (float (B, H, W, 3) in [0, 1]), "pt" (float (B, 3, H, W) in [0, 1]), or
                "latent" / "tokens" (the code grids, no VQ decode).
            return_dict: return an :class:`Emu3PipelineOutput` (else the tuple ``(images,)``).
            callback_on_step_end: ``fn(pipe, row_index, token_step, callback_kwargs)``, called each time an image
                row is completed; ``callback_kwargs`` holds the tensors named in
                ``callback_on_step_end_tensor_inputs`` (see the class docstring). It may return a dict with edited
                ``"codes"``, a new ``"guidance_scale"`` and ``"stop": True`` (or a ``RowUpdate``). diffusers'
                ``PipelineCallback`` / ``MultiPipelineCallbacks`` objects bring their own ``tensor_inputs``.
            prompt_ids, prompt_attention_mask, negative_prompt_ids, negative_prompt_attention_mask: left-padded
                ids instead of text (then ``height``/``width`` are required).
            cache_implementation, compile_decode, parallel_decoding, parallel_window: how the engine decodes
                (:func:`~emu3_hf.generation.generate_image_tokens`): "dynamic" or "static" KV cache; the decode step
                under ``torch.compile`` (CUDA graphs on a GPU); ``"jacobi"`` = exact Jacobi decoding (up to
                ``parallel_window`` tokens per forward pass, the same tokens as sequential decoding for the same
                generator). None picks the device default: compiled static-cache decoding on CUDA, eager
                dynamic-cache decoding elsewhere; the engine's default window.

        Returns:
            :class:`Emu3PipelineOutput` with ``images``, ``codes`` (B, h, w) and ``image_sizes`` (B, 2).

        Example:
            ```python
            >>> out = pipe("a red circle on white", height=720, width=720, generator=torch.manual_seed(0))
            >>> out.images[0].size
            (720, 720)
            ```
        """
        # 1. Check inputs
        guidance_scale, do_sample = self._sampling(guidance_scale, do_sample)
        tensor_inputs = callback_tensor_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)
        resolve_decoding(self._execution_device, cache_implementation, compile_decode, parallel_decoding, parallel_window)
        self.check_inputs(prompt, negative_prompt, height, width, ratio, guidance_scale, num_images_per_prompt,
                          output_type, tensor_inputs, prompt_ids, negative_prompt_ids, temperature=temperature,
                          top_p=top_p)  # fmt: skip

        # 2. Encode the prompts (and negative prompts) with the processor's layout
        ids, mask, sizes, neg_ids, neg_mask = self._prompt_batch(
            self.make_processor(), prompt, negative_prompt, height, width, ratio, image_area, guidance_scale,
            prompt_ids, prompt_attention_mask, negative_prompt_ids, negative_prompt_attention_mask,
        )

        # 3. One row per image
        n = num_images_per_prompt
        ids, mask, sizes = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), sizes.repeat_interleave(n, 0)
        if neg_ids is not None:
            if neg_ids.shape[0] > 1:
                neg_ids = neg_ids.repeat_interleave(n, 0)
                neg_mask = neg_mask.repeat_interleave(n, 0) if neg_mask is not None else None

        # 4. Generate the visual tokens, one progress-bar tick per image row
        result = self._generate_codes(
            ids, mask, neg_ids, neg_mask, sizes, num_frames=1, guidance_scale=guidance_scale, generator=generator,
            do_sample=do_sample, top_k=top_k, top_p=top_p, temperature=temperature,
            callback_on_step_end=callback_on_step_end, tensor_inputs=tensor_inputs,
            decoding=dict(cache_implementation=cache_implementation, compile_decode=compile_decode,
                          parallel_decoding=parallel_decoding, parallel_window=parallel_window),
        )  # fmt: skip
        codes = result.codes.cpu()  # (B, h, w)

        # 5. Decode the code grids with the VQ
        if output_type in ("tokens", "latent"):
            images = codes
        else:
            images = self.decode_codes(codes, result.image_sizes, output_type=output_type)

        # 6. Offload and return
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return Emu3PipelineOutput(images=images, codes=codes, image_sizes=result.image_sizes.cpu())


__all__ = ["BAAI_GUIDANCE_SCALE", "BAAI_NEGATIVE_PROMPT", "BAAI_POSITIVE_PROMPT_SUFFIX", "Emu3Pipeline", "OUTPUT_TYPES"]
