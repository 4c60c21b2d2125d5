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

import os
from typing import Any, Callable, Sequence

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from ..generation import RowProgress, RowUpdate, generate_image_tokens
from ..generation.engine import resolve_decoding
from ..modeling.modeling_emu3 import Emu3LMForCausalLM
from ..modeling.modeling_emu3visionvq import Emu3VisionVQModel
from ..processing.image_processing_emu3visionvq import Emu3VisionVQImageProcessor
from ..processing.layout import SpecialIds
from ..processing.processing_emu3 import Emu3MultimodalProcessor
from ..processing.tokenization_emu3 import Emu3Tokenizer
from ..processing.arguments import as_list, check_finite
from ..utils.atomic import staged_folder
from .lora import Emu3LoraLoaderMixin
from .outputs import Emu3PipelineOutput

BAAI_POSITIVE_PROMPT_SUFFIX = " masterpiece, film grained, best quality."
"""Quality suffix BAAI's README appends to every image-generation prompt."""

BAAI_GUIDANCE_SCALE = 3.0
"""BAAI's classifier-free guidance weight for Emu3-Gen, the pipelines' default when the LM recommends none."""

BAAI_NEGATIVE_PROMPT = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst quality, "
    "low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry."
)
"""BAAI's README negative prompt; the pipeline's default for classifier-free guidance."""

OUTPUT_TYPES = ("pil", "np", "pt", "tokens", "latent")
"""``"latent"`` is diffusers' name for "skip the decoder": like ``"tokens"`` it returns the code grids."""


def _onload(module: torch.nn.Module) -> None:
    """Run an accelerate offload hook's onload step: the engine and the VQ are not entered through ``forward``."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None:
        hook.pre_forward(module)



def callback_tensor_inputs(callback, names: Sequence[str]) -> list[str]:
    """The tensors a step-end callback receives: a diffusers ``PipelineCallback`` names its own, as in diffusers."""
    if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
        return list(callback.tensor_inputs)
    return list(names)


def format_uint8_outputs(items: list[np.ndarray], output_type: str):
    """Post-processed uint8 outputs -> the pipeline's ``output_type``.

    ``items`` holds one array per image (H, W, 3) or per video (T, H, W, 3). "pil": a PIL image (a list of PIL
    frames for a video) per item; "np": float32 in [0, 1], channels last; "pt": float32 in [0, 1], channels before
    H and W. Items of one size are stacked; a mixed-size batch stays a list.
    """
    if output_type == "pil":
        return [PIL.Image.fromarray(a) if a.ndim == 3 else [PIL.Image.fromarray(f) for f in a] for a in items]
    if output_type == "np":
        arrays = [a.astype(np.float32) / 255.0 for a in items]
    elif output_type == "pt":
        arrays = [torch.from_numpy(np.moveaxis(a, -1, -3).copy()).float() / 255.0 for a in items]
    else:
        raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'tokens', got {output_type!r}.")
    if len({a.shape for a in items}) != 1:
        return arrays
    return np.stack(arrays) if output_type == "np" else torch.stack(arrays)


class Emu3Pipeline(Emu3LoraLoaderMixin, DiffusionPipeline):
    r"""Text-to-image generation with Emu3 (BAAI ``Emu3-Gen``).

    Components:
        model ([`Emu3LMForCausalLM`]): the language model that writes the visual tokens.
        vq_model ([`Emu3VisionVQModel`]): the VQ vision tokenizer that turns code grids into pixels.
        tokenizer ([`Emu3Tokenizer`]): the text tokenizer (Qwen BPE + Emu3's vision tokens).
        image_processor ([`Emu3VisionVQImageProcessor`]): pixel post-processing (BAAI's, exactly).

    Optional components: none.

    LoRA adapters (PEFT format) load into the LM with diffusers' methods: ``load_lora_weights``, ``set_adapters``,
    ``fuse_lora`` / ``unfuse_lora``, ``disable_lora`` / ``enable_lora``, ``unload_lora_weights`` (see
    :class:`~emu3_hf.pipelines.lora.Emu3LoraLoaderMixin`); the video and chat pipelines inherit them.

    Callback tensors (``callback_on_step_end_tensor_inputs``):
        ``"codes"``: (B, h, w) partial code grids, -1 where not generated yet (preview them with
        :meth:`decode_codes`); ``"generated_ids"``: (B, n) ids generated so far. As in diffusers, the callback
        may return a dict: its ``"codes"`` replace the partial grids (the rest is generated from the edited codes)
        and its ``"guidance_scale"`` (or ``pipe._guidance_scale`` set in the callback) applies from the next row;
        setting ``pipe._interrupt = True`` stops generation and returns what exists.

    Example:
        ```python
        >>> pipe = Emu3Pipeline.from_pretrained("path/to/emu3-pipeline")  # a folder written by save_pretrained
        >>> out = pipe(["a red circle", "a blue square"], ratio=["1:1", "16:9"], num_images_per_prompt=2,
        ...            generator=torch.Generator().manual_seed(0))
        >>> len(out.images), out.codes.shape[0]
        (4, 4)
        ```
    """

    model_cpu_offload_seq = "model->vq_model"
    _optional_components: list[str] = []
    _callback_tensor_inputs = ["codes", "generated_ids"]

    def __init__(
        self,
        model: Emu3LMForCausalLM,
        vq_model: Emu3VisionVQModel,
        tokenizer: Emu3Tokenizer,
        image_processor: Emu3VisionVQImageProcessor,
    ):
        super().__init__()
        self.register_modules(model=model, vq_model=vq_model, tokenizer=tokenizer, image_processor=image_processor)

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_baai(
        cls,
        lm_path: str | os.PathLike,
        vq_path: str | os.PathLike,
        tokenizer_path: str | os.PathLike | None = None,
        *,
        torch_dtype: torch.dtype | None = None,
        vq_dtype: torch.dtype | None = None,
        attn_implementation: str | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> "Emu3Pipeline":
        """Assemble the pipeline from BAAI's separate folders (Hub ids or local paths).

        Args:
            lm_path: BAAI's LM folder (``BAAI/Emu3-Gen``); it also holds the tokenizer files.
            vq_path: BAAI's VQ folder (``BAAI/Emu3-VisionTokenizer``) with its ``preprocessor_config.json``.
            tokenizer_path: a tokenizer folder when ``lm_path`` has none (e.g. the tiny test fixtures).
            torch_dtype: dtype of the LM (BAAI uses bfloat16 on GPU); ``vq_dtype`` of the VQ (default float32).
            attn_implementation: the LM's attention backend ("sdpa", "eager", "flash_attention_2", ...).
            device: move the pipeline there after loading.
            kwargs: passed to every ``from_pretrained`` (``revision``, ``token``, ``cache_dir``, ...).

        Example:
            ```python
            >>> pipe = Emu3Pipeline.from_baai("tests/fixtures/baai-tiny/lm", "tests/fixtures/baai-tiny/vq",
            ...                               tokenizer_path="path/to/tiny-tokenizer")
            ```
        """
        lm_kwargs = dict(kwargs)
        if attn_implementation is not None:
            lm_kwargs["attn_implementation"] = attn_implementation
        if torch_dtype is not None:
            lm_kwargs["dtype"] = torch_dtype
        model = Emu3LMForCausalLM.from_pretrained(lm_path, **lm_kwargs).eval()
        vq_kwargs = dict(kwargs, dtype=vq_dtype) if vq_dtype is not None else dict(kwargs)
        vq_model = Emu3VisionVQModel.from_pretrained(vq_path, **vq_kwargs).eval()
        tokenizer = Emu3Tokenizer.from_pretrained(tokenizer_path or lm_path, **kwargs)
        image_processor = Emu3VisionVQImageProcessor.from_pretrained(vq_path, **kwargs)
        pipe = cls(model=model, vq_model=vq_model, tokenizer=tokenizer, image_processor=image_processor)
        return pipe.to(device) if device is not None else pipe

    # ------------------------------------------------------------------------------------------------ state
    # diffusers' run-time properties, set by each call (callbacks read and set them).
    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        """Steps the progress bar counts: image rows (frames x rows of the tallest grid)."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def save_pretrained(self, save_directory: str | os.PathLike, *, export_code: bool = False, **kwargs: Any):
        """diffusers' ``save_pretrained``, written through a temporary folder next to ``save_directory`` (an
        interrupted save leaves the previous folder as it was).

        Args:
            export_code: also write the model, config, tokenizer and image-processor code with ``auto_map`` entries,
                so that a Python without emu3-hf loads the components through transformers' Auto classes with
                ``trust_remote_code=True`` (see :func:`emu3_hf.hub.save_pretrained_with_code`).
            kwargs: diffusers' ``save_pretrained`` options (``safe_serialization``, ``variant``, ...).
        """
        if kwargs.get("push_to_hub"):
            raise ValueError("Save locally, then publish with emu3_hf.hub.push_pipeline_to_hub (it writes the card).")
        if export_code:
            from ..hub import save_pretrained_with_code

            save_pretrained_with_code(self, save_directory, **kwargs)
            return
        with staged_folder(save_directory) as staging:
            super().save_pretrained(staging, **kwargs)

    @classmethod
    def download(cls, pretrained_model_name: str, **kwargs: Any) -> str:
        """Fetch a pipeline repo (``from_pretrained`` calls this for repo ids): diffusers' own download refuses
        ``model_index.json`` entries naming modules outside diffusers, such as ours."""
        from ..hub import download_pipeline

        return download_pipeline(pretrained_model_name, **kwargs)

    # ------------------------------------------------------------------------------------------------ helpers
    @property
    def spatial_factor(self) -> int:
        """Pixels per visual token along each side (``height``/``width`` must be multiples of it)."""
        return self.vq_model.spatial_scale_factor

    def make_processor(self) -> Emu3MultimodalProcessor:
        """The prompt processor for the current components (prompt layouts live there, not here).

        Raises when the tokenizer's special or visual ids differ from the LM config's (a tokenizer of another
        model), which would otherwise generate garbage silently.
        """
        processor = Emu3MultimodalProcessor(
            self.image_processor, self.tokenizer, vq_model=self.vq_model, image_area=self.model.config.image_area
        )
        expected = SpecialIds.from_config(self.model.config)
        if processor.special != expected:
            raise ValueError(
                f"The tokenizer's layout ids {processor.special} differ from the model config's {expected}: the "
                "tokenizer belongs to another model. Load the tokenizer saved with this model."
            )
        if self.vq_model.codebook_size != expected.codebook_size:
            raise ValueError(
                f"The VQ has {self.vq_model.codebook_size} codes but the LM has {expected.codebook_size} visual "
                "tokens: the VQ belongs to another model."
            )
        return processor

    def check_inputs(
        self,
        prompt,
        negative_prompt,
        height,
        width,
        ratio,
        guidance_scale,
        num_images_per_prompt,
        output_type,
        callback_on_step_end_tensor_inputs,
        prompt_ids,
        negative_prompt_ids,
        empty_prompt_ok: bool = False,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
    ) -> None:
        """Validate the arguments of ``__call__``; every error says what to change. ``empty_prompt_ok``: a video
        continuation may have no caption (its frames carry the content)."""
        for name, value in (("guidance_scale", guidance_scale), ("temperature", temperature), ("top_p", top_p)):
            check_finite(f"`{name}`", value)  # before the range checks: inf passes `> 0`
        if (prompt is None) == (prompt_ids is None):
            raise ValueError("Pass exactly one of `prompt` (text) or `prompt_ids` (token ids from the processor).")
        if prompt is not None and not all(isinstance(p, str) for p in as_list(prompt)):
            raise TypeError(f"`prompt` must be a string or a list of strings, got {prompt!r}.")
        if prompt is not None and not as_list(prompt):
            raise ValueError("`prompt` is an empty list: there is no prompt to generate for.")
        if prompt is not None and not empty_prompt_ok and not all(p.strip() for p in as_list(prompt)):
            raise ValueError(f"A prompt is empty or blank ({prompt!r}): pass a caption of the image to generate.")
        if negative_prompt is not None and negative_prompt_ids is not None:
            raise ValueError("Pass `negative_prompt` or `negative_prompt_ids`, not both.")
        if prompt_ids is not None and prompt_ids.ndim != 2:
            raise ValueError(f"`prompt_ids` must be (batch, length), got shape {tuple(prompt_ids.shape)}.")
        n_prompts = len(as_list(prompt)) if prompt is not None else prompt_ids.shape[0]
        if isinstance(negative_prompt, (list, tuple)) and len(negative_prompt) not in (1, n_prompts):
            raise ValueError(f"Got {len(negative_prompt)} negative prompts for {n_prompts} prompts; give one or one each.")
        if (height is None) != (width is None):
            raise ValueError("Pass both `height` and `width` (pixels) or neither (then `ratio` and `image_area` decide).")
        sf = self.spatial_factor
        for name, value in (("height", height), ("width", width)):
            if value is not None and (not isinstance(value, int) or value < sf or value % sf):
                raise ValueError(
                    f"`{name}` must be a positive multiple of the VQ's spatial factor {sf} (pixels), got {value!r}; "
                    f"try {max(sf, round((value or 0) / sf) * sf) if isinstance(value, int) else sf * 64}."
                )
        if prompt_ids is not None and height is None:
            raise ValueError("`prompt_ids` already hold the grid size: pass the matching `height` and `width` (pixels).")
        if height is None and isinstance(ratio, (list, tuple)) and len(ratio) not in (1, n_prompts):
            raise ValueError(f"Got {len(ratio)} ratios for {n_prompts} prompts; give one or one per prompt.")
        if not guidance_scale > 0:
            raise ValueError(f"`guidance_scale` must be > 0 (1.0 disables guidance), got {guidance_scale}.")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be a positive int, got {num_images_per_prompt!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"Unknown callback tensor inputs {unknown}; choose from {self._callback_tensor_inputs}.")

    def _prompt_batch(self, processor, prompt, negative_prompt, height, width, ratio, image_area, guidance_scale,
                      prompt_ids, prompt_attention_mask, negative_prompt_ids, negative_prompt_attention_mask):
        """Prompt ids (B, L), mask, grid sizes (B, 2) and the negative ids/mask (None without guidance)."""
        grid = (height // self.spatial_factor, width // self.spatial_factor) if height is not None else (None, None)
        if prompt_ids is None:
            enc = processor(text=as_list(prompt), mode="G", ratio=ratio, image_area=image_area,
                            height=grid[0], width=grid[1], return_tensors="pt", padding="longest")
            ids, mask, sizes = enc["input_ids"], enc["attention_mask"], enc["image_size"]
        else:
            ids = prompt_ids
            mask = torch.ones_like(ids) if prompt_attention_mask is None else prompt_attention_mask
            sizes = torch.tensor([grid] * ids.shape[0])
        if guidance_scale == 1.0:
            return ids, mask, sizes, None, None
        if negative_prompt_ids is not None:
            neg_mask = negative_prompt_attention_mask
            return ids, mask, sizes, negative_prompt_ids, neg_mask
        negatives = as_list(BAAI_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt)
        negatives = negatives * ids.shape[0] if len(negatives) == 1 else negatives
        enc = processor(text=negatives, mode="G", height=sizes[:, 0].tolist(), width=sizes[:, 1].tolist(),
                        return_tensors="pt", padding="longest")
        return ids, mask, sizes, enc["input_ids"], enc["attention_mask"]

    def _generate_codes(
        self, ids, mask, neg_ids, neg_mask, sizes, *, num_frames, guidance_scale, generator, do_sample, top_k, top_p,
        temperature, callback_on_step_end, tensor_inputs, decoding,
    ):  # fmt: skip
        """Run the engine on a prompt batch with a progress bar over image rows and the per-row callback.

        The callback's ``"codes"`` are (B, h, w) partial grids for images and (B, T, h, w) for videos; what it
        returns (diffusers' ``callback_outputs``) and the pipeline's ``_guidance_scale`` / ``_interrupt`` steer
        the engine through a :class:`~emu3_hf.generation.RowUpdate`.
        """
        device = self._execution_device
        _onload(self.model)
        self._guidance_scale, self._interrupt = guidance_scale, False
        self._num_timesteps = total_rows = int(sizes[:, 0].max()) * num_frames
        if isinstance(generator, (list, tuple)) and len(generator) != ids.shape[0]:
            raise ValueError(
                f"Got {len(generator)} generators for {ids.shape[0]} outputs: pass one per generated image or video "
                "(prompts x num_*_per_prompt), or a single torch.Generator."
            )
        with self.progress_bar(total=total_rows) as bar:
            shown = 0

            def on_row(progress: RowProgress) -> RowUpdate:
                nonlocal shown
                done = max(progress.rows_done)
                bar.update(done - shown)
                shown = done
                edited = None
                if callback_on_step_end is not None:
                    codes = progress.codes if num_frames > 1 else progress.codes[:, 0]
                    baseline = codes.clone()  # the callback may edit `codes` in place or return new ones
                    available = {"codes": lambda: codes, "generated_ids": lambda: progress.generated_ids}
                    kwargs = {k: available[k]() for k in tensor_inputs}
                    outputs = callback_on_step_end(self, done - 1, progress.step, kwargs) or {}
                    self._guidance_scale = outputs.get("guidance_scale", self._guidance_scale)
                    new = outputs.get("codes", codes)
                    if not torch.equal(new, baseline):
                        edited = new if num_frames > 1 else new[:, None]
                scale = self._guidance_scale if self._guidance_scale != progress.guidance_scale else None
                return RowUpdate(codes=edited, guidance_scale=scale, stop=self._interrupt)

            return generate_image_tokens(
                self.model,
                ids.to(device),
                attention_mask=mask.to(device),
                negative_input_ids=neg_ids.to(device) if neg_ids is not None else None,
                negative_attention_mask=neg_mask.to(device) if neg_mask is not None else None,
                height=sizes[:, 0],
                width=sizes[:, 1],
                guidance_scale=guidance_scale,
                do_sample=do_sample,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                num_frames=num_frames,
                callback=on_row,
                **decoding,
            )

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
        _onload(self.vq_model)
        vq = self.vq_model
        uint8: list[np.ndarray | None] = [None] * codes.shape[0]
        for h, w in sorted({tuple(s) for s in sizes}):
            rows = [i for i, s in enumerate(sizes) if tuple(s) == (h, w)]
            grid = codes[rows, :h, :w].clamp_min(0).to(vq.device)  # (n, h, w)
            pixels = vq.decode(grid).float().cpu()  # (n, 3, H, W), about [-1, 1]
            images = self.image_processor.postprocess(pixels, return_tensors="np")["pixel_values"]  # uint8 (n,H,W,3)
            for row, image in zip(rows, images):
                uint8[row] = image
        return format_uint8_outputs(uint8, output_type)

    def recommended_sampling(self) -> dict[str, Any]:
        """What a call uses for ``guidance_scale`` and ``do_sample`` when it passes None: BAAI's recipe (guidance
        :data:`BAAI_GUIDANCE_SCALE`, sampling), unless the LM's ``generation_config.json`` sets ``guidance_scale``
        (transformers' field for classifier-free guidance, as MusicGen's does): then that file is the model's own
        recipe, its ``guidance_scale`` and ``do_sample`` both (the embedded tiny model: greedy, no guidance).

        Example:
            ```python
            >>> pipe.recommended_sampling()
            {'guidance_scale': 3.0, 'do_sample': True}
            ```
        """
        config = getattr(self.model, "generation_config", None)
        if getattr(config, "guidance_scale", None) is None:
            return {"guidance_scale": BAAI_GUIDANCE_SCALE, "do_sample": True}
        return {"guidance_scale": float(config.guidance_scale), "do_sample": bool(config.do_sample)}

    def _sampling(self, guidance_scale: float | None, do_sample: bool | None) -> tuple[float, bool]:
        recommended = self.recommended_sampling()
        return (recommended["guidance_scale"] if guidance_scale is None else guidance_scale,
                recommended["do_sample"] if do_sample is None else do_sample)  # fmt: skip

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
                of one per image: then image ``i`` equals its prompt generated alone with generator ``i``.
            do_sample, top_k, top_p, temperature: token sampling (BAAI: sampling with top-k 2048); greedy when
                ``do_sample=False``. ``do_sample`` defaults as :meth:`recommended_sampling` says (BAAI: True).
            output_type: "pil", "np" (float (B, H, W, 3) in [0, 1]), "pt" (float (B, 3, H, W) in [0, 1]), or
                "latent" / "tokens" (the code grids, no VQ decode).
            return_dict: return an :class:`Emu3PipelineOutput` (else the tuple ``(images,)``).
            callback_on_step_end: ``fn(pipe, row_index, token_step, callback_kwargs)``, called each time an image
                row is completed; ``callback_kwargs`` holds the tensors named in
                ``callback_on_step_end_tensor_inputs`` (see the class docstring). It may return a dict with edited
                ``"codes"`` and a new ``"guidance_scale"``; ``pipe._interrupt = True`` stops. diffusers'
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
