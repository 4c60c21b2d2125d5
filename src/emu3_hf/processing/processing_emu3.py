"""The Emu3 processor: prompt layouts for generation, understanding and video, and their inverse.

It keeps BAAI's call form working (``processor(text=..., image=..., mode="G"|"U", ratio=..., image_area=...)``)
so users of BAAI's README switch by changing one import. Named ``Emu3MultimodalProcessor`` because transformers'
native port owns the class name ``Emu3Processor`` (``emu3_hf.Emu3Processor`` is an alias of this class).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .arguments import as_list
from .layout import SpecialIds, VisionSegment, split_segments, vision_block_ids
from .prefix_rules import BaaiPrefixRules

DEFAULT_CHAT_TEMPLATE = "You are a helpful assistant. USER: {image_prompt}{text_prompt}. ASSISTANT:"
DEFAULT_IMAGE_AREA = 720 * 720


MAX_ASPECT_RATIO = 5  # BAAI's image processing refuses images more elongated than this


def calculate_generate_size(ratio: str, image_area: int, spatial_factor: int) -> tuple[int, int]:
    """Token grid ``(h, w)`` for an aspect ratio ``"w:h"`` and a pixel area, exactly as BAAI computes it.

    Example:
        ```python
        >>> calculate_generate_size("1:1", 720 * 720, 8)
        (90, 90)
        >>> calculate_generate_size("4:3", 48, 2)
        (3, 4)
        ```
    """
    try:
        w, h = (int(x) for x in ratio.split(":"))
    except (AttributeError, ValueError):
        raise ValueError(f"ratio must be a string 'w:h' of two positive integers such as '16:9', got {ratio!r}.")
    if w <= 0 or h <= 0:
        raise ValueError(f"ratio must have positive sides, got {ratio!r}.")
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise ValueError(
            f"ratio {ratio!r} is more elongated than {MAX_ASPECT_RATIO}:1, the limit of BAAI's image processing; "
            f"use a ratio between 1:{MAX_ASPECT_RATIO} and {MAX_ASPECT_RATIO}:1."
        )
    if isinstance(image_area, bool) or not isinstance(image_area, int) or image_area <= 0:
        raise ValueError(f"image_area must be a positive number of pixels (an int), got {image_area!r}.")
    scale = math.sqrt(image_area / (w * h))
    th, tw = int(round(h * scale / spatial_factor)), int(round(w * scale / spatial_factor))
    if th < 1 or tw < 1:
        raise ValueError(
            f"image_area={image_area} is too small for ratio {ratio!r}: the token grid would be {th}x{tw}. "
            "Raise image_area."
        )
    return th, tw


def special_ids_from_tokenizer(tokenizer: Any) -> SpecialIds:
    """The layout ids of an :class:`Emu3Tokenizer`."""
    conv = tokenizer.convert_tokens_to_ids
    return SpecialIds(
        bos=tokenizer.bos_token_id,
        eos=tokenizer.eos_token_id,
        pad=tokenizer.pad_token_id,
        img=conv(tokenizer.img_token),
        boi=conv(tokenizer.boi_token),
        eoi=conv(tokenizer.eoi_token),
        eol=conv(tokenizer.eol_token),
        eof=conv(tokenizer.eof_token),
        visual_offset=tokenizer.visual_token_offset,
        codebook_size=tokenizer.codebook_size,
    )


class Emu3MultimodalProcessor(ProcessorMixin):
    r"""Builds Emu3 prompts (ids) from text, images and videos, and parses generated ids back.

    Args:
        image_processor: an ``Emu3VisionVQImageProcessor`` (its ``spatial_factor`` sets the token grid scale).
        tokenizer: an ``Emu3Tokenizer``.
        vq_model: optional ``Emu3VisionVQModel``; needed only to encode pixels (understanding, video continuation)
            and to decode codes back to images. Not saved with the processor.
        understanding_template: BAAI's chat template for understanding, a Python format string with
            ``{image_prompt}`` and ``{text_prompt}`` fields (BAAI calls it ``chat_template``; transformers reserves
            that name for Jinja templates, hence the other name here).

    Example:
        ```python
        >>> processor = Emu3MultimodalProcessor(image_processor, tokenizer, vq_model=vq)
        >>> inputs = processor(text=["a red circle"], mode="G", ratio="1:1", image_area=720 * 720)
        >>> inputs["image_size"]  # (B, 2) token grid per prompt
        tensor([[90, 90]])
        ```
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        vq_model: Any = None,
        understanding_template: str = DEFAULT_CHAT_TEMPLATE,
        image_area: int = DEFAULT_IMAGE_AREA,
        **kwargs,
    ):
        super().__init__(image_processor, tokenizer, **kwargs)
        if "{image_prompt}" not in understanding_template or "{text_prompt}" not in understanding_template:
            raise ValueError("understanding_template needs the fields {image_prompt} and {text_prompt}.")
        self.understanding_template = understanding_template
        self.vq_model = vq_model
        self.image_area = image_area
        self.special = special_ids_from_tokenizer(tokenizer)

    # ----------------------------------------------------------------------------------------------- helpers
    @property
    def spatial_factor(self) -> int:
        if self.vq_model is not None:
            return self.vq_model.spatial_scale_factor
        return self.image_processor.spatial_factor

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _pad_left(self, rows: list[list[int]], padding: bool | str, return_tensors: str | None) -> dict:
        if padding in (False, "do_not_pad") or len(rows) == 1 and padding != "max_length":
            longest = None
        else:
            longest = max(len(r) for r in rows)
        if longest is None and len({len(r) for r in rows}) > 1 and return_tensors is not None:
            raise ValueError("Prompts have different lengths: pass padding='longest' to batch them as tensors.")
        width = longest or len(rows[0])
        ids = [[self.special.pad] * (width - len(r)) + r for r in rows]
        mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
        if return_tensors == "pt":
            return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask)}
        if return_tensors is not None:
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}.")
        return {"input_ids": ids, "attention_mask": mask}

    def encode_images(self, images: Any) -> list[torch.Tensor]:
        """VQ codes ``(h, w)`` for each image (PIL, array or tensor), one at a time so sizes may differ."""
        if self.vq_model is None:
            raise ValueError("Encoding pixels needs a VQ model: build the processor with vq_model=... "
                             "or pass precomputed `codes`.")
        out = []
        for image in as_list(images):
            pixels = self.image_processor(image, return_tensors="pt")["pixel_values"]  # (1, 3, H, W)
            vq = self.vq_model
            pixels = pixels.to(device=vq.device, dtype=vq.dtype)
            with torch.no_grad():
                out.append(vq.encode(pixels)[0].cpu())  # (h, w)
        return out

    def encode_video(self, frames: Any) -> torch.Tensor:
        """VQ codes ``(T / tf, h, w)`` of a clip given as a list of frames (the whole clip encoded at once)."""
        if self.vq_model is None:
            raise ValueError("Encoding a video needs a VQ model: build the processor with vq_model=....")
        frames = as_list(frames)
        if not frames:
            raise ValueError("The video has no frames.")
        tf = self.vq_model.temporal_downsample_factor
        if len(frames) % tf:
            raise ValueError(
                f"A video must have a multiple of temporal_downsample_factor={tf} frames, got {len(frames)}. "
                f"Trim or repeat frames to {len(frames) // tf * tf or tf}."
            )
        processed = [self.image_processor(f, return_tensors="pt")["pixel_values"] for f in frames]  # (1, 3, H, W)
        sizes = sorted({tuple(p.shape[-2:]) for p in processed})
        if len(sizes) > 1:
            raise ValueError(
                f"Video frames resize to different sizes {sizes}: resize or crop every frame to one size first."
            )
        pixels = torch.cat(processed)
        pixels = pixels.to(device=self.vq_model.device, dtype=self.vq_model.dtype)[None]  # (1, T, 3, H, W)
        with torch.no_grad():
            return self.vq_model.encode(pixels)[0].cpu()

    def vision_prompt_ids(self, codes: torch.Tensor) -> list[int]:
        """Ids of a complete vision block for codes ``(h, w)`` or ``(T, h, w)``."""
        h, w = codes.shape[-2:]
        return vision_block_ids(codes, self.special, self._text_ids(f"{h}*{w}"))

    def generation_prompt(self, text: str, height: int, width: int) -> str:
        """BAAI's generation prompt string: ``[BOS] text [BOI] "h*w" [IMG]`` for an ``h x w`` token grid."""
        tok = self.tokenizer
        return f"{tok.bos_token}{text}{tok.boi_token}{height}*{width}{tok.img_token}"

    def _grid_sizes(self, n: int, ratio, image_area, height, width) -> list[tuple[int, int]]:
        if (height is None) != (width is None):
            raise ValueError("Pass both `height` and `width` (token grid) or neither.")
        if height is not None:
            hs, ws = as_list(height), as_list(width)
            if len(hs) == 1:
                hs, ws = hs * n, ws * n
            if len(hs) != n or len(ws) != n:
                raise ValueError(f"Got {len(hs)} heights / {len(ws)} widths for {n} prompts.")
            return [(int(h), int(w)) for h, w in zip(hs, ws)]
        ratios = as_list(ratio)
        if len(ratios) == 1:
            ratios = ratios * n
        if len(ratios) != n:
            raise ValueError(f"Got {len(ratios)} ratios for {n} prompts: pass one ratio or one per prompt.")
        area = image_area or self.image_area
        return [calculate_generate_size(r, area, self.spatial_factor) for r in ratios]

    # ------------------------------------------------------------------------------------------------ call
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        image: Any = None,
        *,
        mode: str = "G",
        ratio: str | Sequence[str] = "1:1",
        image_area: int | None = None,
        height: int | Sequence[int] | None = None,
        width: int | Sequence[int] | None = None,
        codes: torch.Tensor | Sequence[torch.Tensor] | None = None,
        video: Any = None,
        padding: bool | str = "longest",
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Build a batch of prompts, left padded.

        ``mode="G"`` (generation): ``[BOS] text [BOI] "h*w" [IMG]`` with ``(h, w)`` from ``ratio`` and
        ``image_area`` (BAAI's rule) or from ``height``/``width`` in tokens; for video continuation pass ``video``
        (frames) or ``codes`` ``(T, h, w)``, whose frames follow ``[IMG]``. ``mode="U"`` (understanding): BAAI's chat
        template around one vision block per prompt, from ``image`` (PIL/arrays; or a list of several images per
        prompt), ``video`` (frames) or precomputed ``codes``. Returns ``input_ids``, ``attention_mask`` and
        ``image_size`` (B, 2) in tokens.
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}.")
        if text is None:
            raise ValueError("`text` is required (a string or a list of strings).")
        texts = as_list(text)
        if mode == "G":
            rows, sizes = self._generation_rows(texts, ratio, image_area, height, width, codes, video)
        elif mode == "U":
            rows, sizes = self._understanding_rows(texts, image, codes, video)
        else:
            raise ValueError(f"mode must be 'G' (generation) or 'U' (understanding), got {mode!r}.")
        data = self._pad_left(rows, padding, return_tensors)
        data["image_size"] = torch.tensor(sizes, dtype=torch.long) if return_tensors == "pt" else sizes
        return BatchFeature(data=data)

    def _generation_rows(self, texts, ratio, image_area, height, width, codes, video):
        if codes is None and video is not None:
            codes = self.encode_video(video)
        if codes is not None:
            # Continuation: the given latent frames (T, h, w) follow [IMG]; the grid size is theirs.
            clips = as_list(codes) if isinstance(codes, (list, tuple)) else [codes] * len(texts)
            if len(clips) != len(texts):
                raise ValueError(f"Got {len(clips)} code clips for {len(texts)} prompts.")
            rows, sizes = [], []
            for text, clip in zip(texts, clips):
                block = self.vision_prompt_ids(clip)[:-1]  # without EOI: generation goes on after the last EOF
                rows.append([self.special.bos, *self._text_ids(text), *block])
                sizes.append(tuple(clip.shape[-2:]))
            return rows, sizes
        sizes = self._grid_sizes(len(texts), ratio, image_area, height, width)
        rows = [self._text_ids(self.generation_prompt(t, h, w)) for t, (h, w) in zip(texts, sizes)]
        return rows, sizes

    def _understanding_rows(self, texts, image, codes, video):
        if sum(x is not None for x in (image, codes, video)) != 1:
            raise ValueError("mode='U' needs exactly one of `image`, `video` or `codes`.")
        if video is not None:
            per_prompt = [[self.encode_video(video)]] if len(texts) == 1 else None
            if per_prompt is None:
                raise ValueError("Pass one video per call in mode='U' (or precomputed `codes`, one clip per prompt).")
        elif image is not None:
            images = as_list(image)
            if len(images) != len(texts):
                raise ValueError(f"Got {len(images)} images for {len(texts)} prompts; pass one (or a list) per prompt.")
            per_prompt = [self.encode_images(im) for im in images]
        else:
            clips = as_list(codes) if isinstance(codes, (list, tuple)) else list(codes)
            if len(clips) != len(texts):
                raise ValueError(f"Got {len(clips)} code grids for {len(texts)} prompts.")
            per_prompt = [as_list(c) for c in clips]
        head, tail = self.understanding_template.split("{image_prompt}")
        before, after = head, tail.split("{text_prompt}")
        rows, sizes = [], []
        for text, grids in zip(texts, per_prompt):
            vision = [i for g in grids for i in self.vision_prompt_ids(g)]
            ids = [self.special.bos, *self._text_ids(before), *vision, *self._text_ids(after[0] + text + after[1])]
            rows.append(ids)
            sizes.append(tuple(grids[0].shape[-2:]))
        return rows, sizes

    # ---------------------------------------------------------------------------------------------- decode
    def decode(
        self, ids: torch.Tensor | list[int], skip_special_tokens: bool = False, strict: bool = True, **kwargs
    ) -> list[Any] | str:
        """One generated sequence -> a list of text strings and images (PIL; a list of PIL frames for videos).

        Every id must be a token of the tokenizer (``0 <= id < len(tokenizer)``): any other id raises a
        ``ValueError`` naming it, with ``strict=True`` and ``strict=False`` alike (it is a caller's error, not a
        malformed generation to repair).

        Vision blocks are decoded by the VQ when the processor has one, else returned as code tensors. With
        ``skip_special_tokens=True`` the result is the text alone, as one string (BAAI's tokenizer drops every
        special and visual id then, so no image survives; this is what BAAI's understanding example calls).
        """
        ids = self.token_ids(ids)
        if skip_special_tokens:
            return self.tokenizer.decode(ids, skip_special_tokens=True, **kwargs)
        out: list[Any] = []
        for seg in split_segments(ids, self.special, strict=strict):
            if isinstance(seg, VisionSegment):
                out.append(self.decode_codes(seg.codes) if self.vq_model is not None else seg.codes)
            else:
                out.append(self.tokenizer.decode(seg, **kwargs))
        return out

    def batch_decode(self, sequences, **kwargs) -> list[list[Any] | str]:
        return [self.decode(s, **kwargs) for s in sequences]

    # BAAI's processor API, kept so scripts written for BAAI's Emu3Processor run unchanged.
    def build_prefix_constrained_fn(self, height, width):
        """BAAI's prefix-constraint callback for transformers' ``PrefixConstrainedLogitsProcessor``: per row, the
        tokens the image layout allows next. ``height``/``width`` are token grids (ints, lists or tensors, one per
        row, e.g. ``inputs["image_size"][:, 0]``). Use a fresh one per ``generate`` call; the
        :func:`~emu3_hf.generation.generate_image_tokens` engine does the same job much faster."""
        heights = [int(h) for h in (height.tolist() if isinstance(height, torch.Tensor) else as_list(height))]
        widths = [int(w) for w in (width.tolist() if isinstance(width, torch.Tensor) else as_list(width))]
        return BaaiPrefixRules(self.special, heights, widths)

    def vision_encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The VQ's ``encode`` (BAAI's name)."""
        if self.vq_model is None:
            raise ValueError("vision_encode needs a VQ model: build the processor with vq_model=....")
        return self.vq_model.encode(pixel_values)

    def vision_decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The VQ's ``decode`` (BAAI's name)."""
        if self.vq_model is None:
            raise ValueError("vision_decode needs a VQ model: build the processor with vq_model=....")
        return self.vq_model.decode(codes)

    def parse_codes(self, ids: torch.Tensor | list[int], strict: bool = True) -> list[torch.Tensor]:
        """The code grids ``(T, h, w)`` of every vision block in a sequence (ids checked as in :meth:`decode`)."""
        segments = split_segments(self.token_ids(ids), self.special, strict=strict)
        return [s.codes for s in segments if isinstance(s, VisionSegment)]

    def token_ids(self, ids: torch.Tensor | Sequence[int]) -> list[int]:
        """One sequence of token ids (a 1-D integer tensor or a sequence of ints) as a list of ints, each checked to
        be a token of the tokenizer; anything else raises a ``ValueError`` naming the first bad id and its position.

        Example:
            ```python
            >>> processor.token_ids(torch.tensor([1, 2, 3]))
            [1, 2, 3]
            >>> processor.token_ids([1, -1])
            ValueError: ids[1] = -1 is not a token id: ids must lie in [0, 1867) (the tokenizer's vocabulary) ...
            ```
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
                raise ValueError(f"ids must be one sequence of integer token ids (a 1-D integer tensor or a list of "
                                 f"ints), got a tensor of shape {tuple(ids.shape)} and dtype {ids.dtype}.")  # fmt: skip
            ids = ids.tolist()
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) and not hasattr(ids, "__iter__"):
            raise ValueError(f"ids must be a sequence of integer token ids, got {type(ids).__name__}.")
        vocab_size = len(self.tokenizer)
        out = []
        for position, value in enumerate(ids):
            try:
                token = operator.index(value) if not isinstance(value, bool) else None
            except TypeError:
                token = None
            if token is None or not 0 <= token < vocab_size:
                raise ValueError(
                    f"ids[{position}] = {value!r} is not a token id: ids must be ints in [0, {vocab_size}) (the "
                    "tokenizer's vocabulary). Pass the ids the model generated, unchanged."
                )
            out.append(token)
        return out

    def decode_codes(self, codes: torch.Tensor):
        """Codes ``(h, w)`` -> a PIL image; ``(T, h, w)`` with T > 1 -> a list of PIL frames."""
        vq = self.vq_model
        if codes.dim() == 3 and codes.shape[0] == 1:
            codes = codes[0]
        with torch.no_grad():
            pixels = vq.decode(codes[None].to(vq.device))[0].float().cpu()  # (3, H, W) or (T, 3, H, W)
        if pixels.dim() == 3:
            return self.image_processor.postprocess(pixels[None], return_tensors="PIL.Image.Image")["pixel_values"][0]
        return self.image_processor.postprocess(pixels, return_tensors="PIL.Image.Image")["pixel_values"]

    def to_dict(self) -> dict[str, Any]:
        # The VQ is a model with its own folder, never part of processor_config.json.
        vq, self.vq_model = self.vq_model, None
        try:
            out = super().to_dict()
        finally:
            self.vq_model = vq
        out.pop("vq_model", None)
        out.pop("special", None)
        return out

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask"]


__all__ = ["DEFAULT_CHAT_TEMPLATE", "Emu3MultimodalProcessor", "calculate_generate_size", "special_ids_from_tokenizer"]
