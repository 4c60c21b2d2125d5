"""What the Emu3 pipelines share, in one place: components, loading and saving, prompt layout, onloading.

The three pipelines are siblings, none the child of another: :class:`Emu3PipelineBase` holds what every one of them
does (the four components, :meth:`~Emu3PipelineBase.from_baai`, atomic ``save_pretrained``, Hub downloads,
:meth:`~Emu3PipelineBase.make_processor`, LoRA adapters through
:class:`~emu3_hf.pipelines.lora.Emu3LoraLoaderMixin`), and :class:`Emu3VisualPipelineBase` adds what the two
pipelines that write visual tokens share (classifier-free guidance, the row callback and its steering, the default
sampling recipe, argument checks, the engine call). Because they share components, any pipeline is built from
another's: ``Emu3ChatPipeline(**pipe.components)``, and a folder saved by one loads as any other.

Example:
    ```python
    >>> from emu3_hf.pipelines import Emu3ChatPipeline, Emu3Pipeline
    >>> from emu3_hf.pipelines.base import Emu3PipelineBase
    >>> pipe = Emu3Pipeline.from_pretrained("path/to/emu3-pipeline")
    >>> chat = Emu3ChatPipeline(**pipe.components)          # the same modules, no copy
    >>> isinstance(chat, Emu3PipelineBase), isinstance(chat, Emu3Pipeline)
    (True, False)
    ```
"""

import os
from typing import Any, Sequence

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from ..generation import RowProgress, RowUpdate, generate_image_tokens
from ..modeling.modeling_emu3 import Emu3LMForCausalLM
from ..modeling.modeling_emu3visionvq import Emu3VisionVQModel
from ..processing.arguments import as_list, check_finite
from ..processing.image_processing_emu3visionvq import Emu3VisionVQImageProcessor
from ..processing.layout import SpecialIds
from ..processing.processing_emu3 import Emu3MultimodalProcessor
from ..processing.tokenization_emu3 import Emu3Tokenizer
from ..utils.atomic import staged_folder
from .lora import Emu3LoraLoaderMixin

BAAI_GUIDANCE_SCALE = 3.0
"""BAAI's classifier-free guidance weight for Emu3-Gen, the pipelines' default when the LM recommends none."""

BAAI_NEGATIVE_PROMPT = (
    "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst quality, "
    "low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry."
)
"""BAAI's README negative prompt; the pipeline's default for classifier-free guidance."""

OUTPUT_TYPES = ("pil", "np", "pt", "tokens", "latent")
"""``"latent"`` is diffusers' name for "skip the decoder": like ``"tokens"`` it returns the code grids."""


def onload(module: torch.nn.Module) -> None:
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


Generators = torch.Generator | list[torch.Generator] | None


def check_generators(generator: Generators, count: int) -> None:
    """Refuse a ``generator`` that is neither None, a ``torch.Generator``, nor a list of exactly ``count`` of them
    (one per generated output, diffusers' convention), before any work."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(f"`generator` must be a torch.Generator or a list of them, got {generator!r}.")
    if len(generator) != count:
        raise ValueError(
            f"Got {len(generator)} generators for {count} outputs: pass one per generated output "
            "(prompts x num_*_per_prompt), or a single torch.Generator."
        )


def seeded_generator(generator: Generators) -> torch.Generator | list[torch.Generator]:
    """The generator(s) a sampling call draws from: the caller's, or for None a new CPU generator seeded from the
    operating system's entropy, so that no pipeline ever reads or advances torch's global random state (which
    ``torch.manual_seed`` and every other library share). Pass a seeded ``generator`` to reproduce a result."""
    if generator is not None:
        return list(generator) if isinstance(generator, tuple) else generator
    fresh = torch.Generator()
    fresh.seed()  # std::random_device, not torch's default generator
    return fresh



def callback_steering(returned: Any) -> RowUpdate:
    """What a pipeline's step-end callback returned, as a :class:`~emu3_hf.generation.RowUpdate` whose ``codes`` have
    the shape of the ``"codes"`` the callback received.

    None steers nothing; a dict (diffusers' ``callback_outputs``, often ``callback_kwargs`` itself) is read for
    ``"codes"``, ``"guidance_scale"`` and ``"stop"``, other keys being the tensors diffusers callbacks hand back; a
    ``RowUpdate`` is taken as it is. Anything else is a TypeError naming its type.

    Example:
        ```python
        >>> callback_steering({"stop": True, "generated_ids": None})
        RowUpdate(codes=None, guidance_scale=None, stop=True)
        ```
    """
    if returned is None:
        return RowUpdate()
    if isinstance(returned, RowUpdate):
        return returned
    if not isinstance(returned, dict):
        raise TypeError(
            f"callback_on_step_end returned a {type(returned).__name__}: return None, a dict (keys 'codes', "
            "'guidance_scale', 'stop'; diffusers' callback_kwargs are fine) or a RowUpdate."
        )
    stop = returned.get("stop", False)
    if not isinstance(stop, bool):
        raise TypeError(f"callback_on_step_end returned stop={stop!r}: it must be True or False.")
    return RowUpdate(codes=returned.get("codes"), guidance_scale=returned.get("guidance_scale"), stop=stop)


class Emu3PipelineBase(Emu3LoraLoaderMixin, DiffusionPipeline):
    r"""What every Emu3 pipeline is: the four components, BAAI loading, saving, the prompt processor, LoRA.

    Components:
        model ([`Emu3LMForCausalLM`]): the language model.
        vq_model ([`Emu3VisionVQModel`]): the VQ vision tokenizer (pixels <-> code grids).
        tokenizer ([`Emu3Tokenizer`]): the text tokenizer (Qwen BPE + Emu3's vision tokens).
        image_processor ([`Emu3VisionVQImageProcessor`]): pixel pre- and post-processing (BAAI's, exactly).

    Optional components: none.

    LoRA adapters (PEFT format) load into the LM with diffusers' methods: ``load_lora_weights``, ``set_adapters``,
    ``fuse_lora`` / ``unfuse_lora``, ``disable_lora`` / ``enable_lora``, ``unload_lora_weights`` (see
    :class:`~emu3_hf.pipelines.lora.Emu3LoraLoaderMixin`).

    Subclasses: :class:`~emu3_hf.pipelines.Emu3ChatPipeline` directly, and through :class:`Emu3VisualPipelineBase`
    :class:`~emu3_hf.pipelines.Emu3Pipeline` and :class:`~emu3_hf.pipelines.Emu3VideoPipeline`.
    """

    model_cpu_offload_seq = "model->vq_model"
    _optional_components: list[str] = []

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
    ) -> "Emu3PipelineBase":
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


class Emu3VisualPipelineBase(Emu3PipelineBase):
    r"""What the pipelines that write visual tokens (text-to-image, video) share: the run-time state diffusers users
    read in callbacks, the default sampling recipe, argument checks, and the engine call with its row callback.

    Callback tensors (``callback_on_step_end_tensor_inputs``): ``"codes"``, the partial code grids (-1 where not
    generated yet; (B, h, w) for images, (B, T, h, w) for videos) and ``"generated_ids"``, (B, n) the ids generated
    so far. The callback ``fn(pipe, row_index, token_step, callback_kwargs)`` runs each time an image row is
    complete and steers the rest with what it returns: None, or a dict (diffusers' convention: returning
    ``callback_kwargs`` itself is fine, keys other than these are ignored) with

    - ``"codes"``: edited partial grids (or edit ``callback_kwargs["codes"]`` in place): the codes already generated
      are replaced and the rest is generated from the edited ones;
    - ``"guidance_scale"``: the guidance weight from the next row on (:attr:`guidance_scale` reports it);
    - ``"stop"``: ``True`` ends generation now; the output holds what exists (missing codes are -1);

    or a :class:`~emu3_hf.generation.RowUpdate` with the same three fields. diffusers' own convention, setting
    ``pipe._interrupt = True`` inside the callback, also stops.
    """

    _callback_tensor_inputs = ["codes", "generated_ids"]

    # ------------------------------------------------------------------------------------------------ state
    # diffusers' run-time properties, set by each call; a callback reads them and steers with its return value.
    @property
    def guidance_scale(self) -> float:
        """The guidance weight in force (the call's, or the last one a callback returned)."""
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
        """Whether the call was stopped by its callback (``{"stop": True}``)."""
        return self._interrupt

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
        returns (see the class docstring, read by :func:`callback_steering`) steers the engine through a
        :class:`~emu3_hf.generation.RowUpdate`.
        """
        device = self._execution_device
        check_generators(generator, ids.shape[0])
        generator = seeded_generator(generator) if do_sample else None  # greedy draws nothing
        onload(self.model)
        self._guidance_scale, self._interrupt = guidance_scale, False
        self._num_timesteps = total_rows = int(sizes[:, 0].max()) * num_frames
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
                    steer = callback_steering(callback_on_step_end(self, done - 1, progress.step, kwargs))
                    if steer.guidance_scale is not None:
                        self._guidance_scale = float(steer.guidance_scale)
                    self._interrupt = self._interrupt or steer.stop
                    new = codes if steer.codes is None else steer.codes
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


__all__ = [
    "BAAI_GUIDANCE_SCALE",
    "BAAI_NEGATIVE_PROMPT",
    "OUTPUT_TYPES",
    "Emu3PipelineBase",
    "Emu3VisualPipelineBase",
    "Generators",
    "callback_steering",
    "callback_tensor_inputs",
    "check_generators",
    "format_uint8_outputs",
    "onload",
    "seeded_generator",
]
