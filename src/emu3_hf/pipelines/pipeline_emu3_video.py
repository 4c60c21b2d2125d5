"""Text-to-video and video continuation with Emu3, on the shared generation engine.

A video is a clip of latent frames, each ``h`` rows of ``w`` codes closed by EOF, inside one vision block; the VQ
turns ``T`` latent frames into ``T * temporal_downsample_factor`` pixel frames. Continuation ("what happens
next") encodes the given frames (or an image: a clip of one latent frame) with the VQ, puts their codes after the
prompt's ``[IMG]``, and generates further latent frames after them; the returned clip is the given latent frames,
bit-identical, followed by the new ones.

Example:
    ```python
    >>> from emu3_hf.pipelines import Emu3VideoPipeline
    >>> from emu3_hf.utils.video_export import export_to_gif
    >>> pipe = Emu3VideoPipeline.from_pretrained("path/to/emu3-pipeline")
    >>> video = pipe("a small red circle moving right on a black background", num_frames=8).frames[0]
    >>> export_to_gif(video, "clip.gif", fps=8)
    ```
"""

from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput

from ..processing.arguments import as_list
from ..generation.engine import resolve_decoding
from .base import BAAI_NEGATIVE_PROMPT, Emu3VisualPipelineBase, callback_tensor_inputs, format_uint8_outputs, onload


@dataclass
class Emu3VideoPipelineOutput(BaseOutput):
    """Output of :class:`Emu3VideoPipeline`.

    Attributes:
        frames: ``"pil"``: one list of PIL frames per video; ``"np"``: float32 (B, T, H, W, 3) in [0, 1];
            ``"pt"``: float32 (B, T, 3, H, W) in [0, 1]; ``"tokens"``: the codes.
        codes: (B, T_latent, h, w) the whole clip's codes: the context's latent frames, then the generated ones.
        num_context_frames: latent frames at the start of ``codes`` that came from the given video (0 for
            text-to-video).
    """

    frames: Union[list[list[PIL.Image.Image]], np.ndarray, torch.Tensor]
    codes: torch.Tensor
    num_context_frames: int


class Emu3VideoPipeline(Emu3VisualPipelineBase):
    r"""Text-to-video generation and video continuation with Emu3.

    Components: the same four as :class:`~emu3_hf.pipelines.Emu3Pipeline` (``model``, ``vq_model``, ``tokenizer``,
    ``image_processor``), a sibling of it: both come from :class:`~emu3_hf.pipelines.base.Emu3VisualPipelineBase`
    (loading, saving, LoRA, guidance, the row callback and how its return value steers).

    Callback tensors: ``"codes"`` (B, T, h, w) partial code grids (-1 where not generated yet) and
    ``"generated_ids"``.
    """

    def _context_codes(self, processor, video: Any) -> torch.Tensor:
        """VQ codes (T, h, w) of the frames to continue; a single image counts as one latent frame."""
        if isinstance(video, (list, tuple)):
            if not video:
                raise ValueError("`video` has no frames: pass a list of frames (or one image) to continue.")
            return processor.encode_video(list(video))
        if isinstance(video, torch.Tensor) and video.dtype in (torch.int32, torch.int64):
            raise ValueError("`video` holds integer codes: pass them as `video_codes` instead.")
        return processor.encode_images([video])[0][None]  # an image: one latent frame (h, w) -> (1, h, w)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        video: Any = None,
        video_codes: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        ratio: str | Sequence[str] = "1:1",
        image_area: int | None = None,
        guidance_scale: float | None = None,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        do_sample: bool | None = None,
        top_k: int | None = 2048,
        top_p: float = 1.0,
        temperature: float = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., Any] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("codes",),
        cache_implementation: str | None = None,
        compile_decode: bool | None = None,
        parallel_decoding: str | None = None,
        parallel_window: int | None = None,
    ) -> Emu3VideoPipelineOutput | tuple:
        r"""Generate a video from text, or continue ``video``.

        Args:
            prompt: the caption(s) of the video(s).
            num_frames: pixel frames to generate (a multiple of the VQ's ``temporal_downsample_factor``; default
                two latent frames). With ``video`` these come after the given frames.
            video: frames to continue (a list of PIL images / arrays, a multiple of the temporal factor long) or
                one image; shared by every prompt. ``video_codes`` ((T, h, w) VQ codes) skips the encoding.
            height, width, ratio, image_area: frame size for text-to-video (see
                :class:`~emu3_hf.pipelines.Emu3Pipeline`); with a context video the size is the video's.
            The other arguments are those of :class:`~emu3_hf.pipelines.Emu3Pipeline`.

        Returns:
            :class:`Emu3VideoPipelineOutput` with ``frames``, ``codes`` and ``num_context_frames``.
        """
        # 1. Check inputs
        guidance_scale, do_sample = self._sampling(guidance_scale, do_sample)
        tf = self.vq_model.temporal_downsample_factor
        num_frames = 2 * tf if num_frames is None else num_frames
        if not isinstance(num_frames, int) or num_frames < tf or num_frames % tf:
            raise ValueError(
                f"num_frames must be a positive multiple of the VQ's temporal_downsample_factor={tf} (pixel frames),"
                f" got {num_frames!r}; try {max(tf, (num_frames or 0) // tf * tf) if isinstance(num_frames, int) else 2 * tf}."
            )
        if video is not None and video_codes is not None:
            raise ValueError("Pass `video` (frames) or `video_codes` (VQ codes), not both.")
        continuing = video is not None or video_codes is not None
        if continuing and height is not None:
            raise ValueError("The frame size of a continuation is the given video's: drop `height`/`width`.")
        tensor_inputs = callback_tensor_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)
        resolve_decoding(self._execution_device, cache_implementation, compile_decode, parallel_decoding, parallel_window)
        self.check_inputs(prompt, negative_prompt, height, width, ratio, guidance_scale, num_videos_per_prompt,
                          output_type, tensor_inputs, None, None, empty_prompt_ok=continuing,
                          temperature=temperature, top_p=top_p)  # fmt: skip
        processor = self.make_processor()

        # 2. Encode the context clip (continuation) and lay out the prompts
        if continuing:
            onload(self.vq_model)
            context = video_codes if video_codes is not None else self._context_codes(processor, video)
            if context.dim() != 3:
                raise ValueError(f"video_codes must be (T, h, w), got shape {tuple(context.shape)}.")
            enc = processor(text=as_list(prompt), mode="G", codes=context.cpu())
            negatives = as_list(BAAI_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt)
            negatives = negatives * len(as_list(prompt)) if len(negatives) == 1 else negatives
            neg = processor(text=negatives, mode="G", codes=context.cpu()) if guidance_scale != 1.0 else None
            ids, mask, sizes = enc["input_ids"], enc["attention_mask"], enc["image_size"]
            neg_ids, neg_mask = (neg["input_ids"], neg["attention_mask"]) if neg is not None else (None, None)
        else:
            context = None
            ids, mask, sizes, neg_ids, neg_mask = self._prompt_batch(
                processor, prompt, negative_prompt, height, width, ratio, image_area, guidance_scale,
                None, None, None, None,
            )  # fmt: skip

        # 3. One row per video
        n = num_videos_per_prompt
        ids, mask, sizes = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), sizes.repeat_interleave(n, 0)
        if neg_ids is not None and neg_ids.shape[0] > 1:
            neg_ids, neg_mask = neg_ids.repeat_interleave(n, 0), neg_mask.repeat_interleave(n, 0)

        # 4. Generate num_frames / tf latent frames after the prompt (and the context frames)
        result = self._generate_codes(
            ids, mask, neg_ids, neg_mask, sizes, num_frames=num_frames // tf, guidance_scale=guidance_scale,
            generator=generator, do_sample=do_sample, top_k=top_k, top_p=top_p, temperature=temperature,
            callback_on_step_end=callback_on_step_end, tensor_inputs=tensor_inputs,
            decoding=dict(cache_implementation=cache_implementation, compile_decode=compile_decode,
                          parallel_decoding=parallel_decoding, parallel_window=parallel_window),
        )  # fmt: skip
        new = result.codes.cpu()  # (B, T_new, h, w)
        if new.dim() == 3:
            new = new[:, None]
        codes = new if context is None else torch.cat([context.cpu()[None].expand(new.shape[0], -1, -1, -1), new], 1)

        # 5. Decode the whole clip with the VQ
        frames = codes if output_type in ("tokens", "latent") else self.decode_video_codes(codes, output_type)

        # 6. Offload and return
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return Emu3VideoPipelineOutput(frames=frames, codes=codes, num_context_frames=0 if context is None else context.shape[0])

    @torch.no_grad()
    def decode_video_codes(self, codes: torch.Tensor, output_type: str = "pil"):
        """Codes (B, T, h, w) -> T * temporal_downsample_factor frames per video (PIL lists, np or pt)."""
        if codes.dim() != 4:
            raise ValueError(f"codes must be (B, T, h, w), got shape {tuple(codes.shape)}.")
        onload(self.vq_model)
        vq = self.vq_model
        # one clip at a time, so a clip's pixels never depend on the batch it was generated in (see decode_codes)
        pixels = torch.cat([vq.decode(clip[None].clamp_min(0).to(vq.device)).float().cpu() for clip in codes])
        b, t = pixels.shape[:2]  # (B, T*tf, 3, H, W)
        uint8 = self.image_processor.postprocess(pixels.flatten(0, 1), return_tensors="np")["pixel_values"]
        return format_uint8_outputs(list(np.asarray(uint8).reshape(b, t, *uint8[0].shape)), output_type)


__all__ = ["Emu3VideoPipeline", "Emu3VideoPipelineOutput"]
