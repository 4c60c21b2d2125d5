"""Image processor of Emu3's VQ vision tokenizer, bit-exact with BAAI's `Emu3VisionVQImageProcessor`.

Preprocessing: RGB conversion (PIL `convert("RGB")`: alpha is dropped, not composited) -> smart resize
to multiples of `spatial_factor` within `[min_pixels, max_pixels]` (PIL, `resample`, uint8 in and out)
-> `x * rescale_factor` (float64, then float32) -> `(x - mean) / std` (float32) -> CHW.
Postprocessing inverts it: `(x - (-mean/std)) / (1/std)`, `* 255`, clip to [0, 255], `astype(uint8)`
(which truncates, as BAAI's does).

Example:
    >>> from PIL import Image
    >>> proc = Emu3VisionVQImageProcessor(min_pixels=256, max_pixels=1024, spatial_factor=2)
    >>> proc(Image.new("RGB", (37, 23)), return_tensors="pt").pixel_values.shape
    torch.Size([1, 3, 24, 36])
    >>> proc.postprocess(proc(Image.new("RGB", (37, 23)), return_tensors="pt").pixel_values).pixel_values[0].size
    (36, 24)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
# diffusers resolves a pipeline component's base class by name inside the component's own module.
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature, ImageProcessingMixin  # noqa: F401
from transformers.processing_utils import ImagesKwargs

from .arguments import check_finite

__all__ = ["Emu3VisionVQImageProcessor", "smart_resize"]

PIL_OUTPUT = "PIL.Image.Image"
MAX_ASPECT_RATIO = 5


def smart_resize(
    height: int,
    width: int,
    factor: int = 8,
    min_pixels: int = 512 * 512,
    max_pixels: int = 1024 * 1024,
) -> tuple[int, int]:
    """Target (height, width) for an image: multiples of `factor`, area within `[min_pixels, max_pixels]`.

    Reproduces BAAI's rule exactly: start from `round(side / factor) * factor` (Python's round, so
    18.5 -> 18); if that area exceeds `max_pixels`, use `floor(side / beta / factor) * factor` with
    `beta = sqrt(h * w / max_pixels)`; if it is below `min_pixels`, use `ceil(side * beta / factor) * factor`
    with `beta = sqrt(min_pixels / (h * w))`.

    Raises:
        ValueError: a side is shorter than `factor`, or the aspect ratio is above 5.

    Example:
        >>> smart_resize(23, 37, factor=2, min_pixels=256, max_pixels=1024)
        (24, 36)
    """
    if height < factor or width < factor:
        raise ValueError(
            f"Image of {height}x{width} (h x w) pixels has a side shorter than the spatial factor {factor}; "
            f"upscale it so that both sides are at least {factor} pixels."
        )
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"Image of {height}x{width} (h x w) pixels has an aspect ratio of "
            f"{max(height, width) / min(height, width):.2f}; Emu3 accepts at most {MAX_ASPECT_RATIO}. "
            "Crop or pad the image first."
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    if h_bar < factor or w_bar < factor:
        raise ValueError(
            f"max_pixels={max_pixels} is too small for spatial factor {factor} and a {height}x{width} image "
            f"(it resizes to {h_bar}x{w_bar}); raise max_pixels."
        )
    return h_bar, w_bar


class Emu3VisionVQImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments beyond transformers' `ImagesKwargs` (accepted by `from_pretrained` overrides)."""

    min_pixels: int
    max_pixels: int
    spatial_factor: int


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _is_single_image(x: Any) -> bool:
    return isinstance(x, Image.Image) or (hasattr(x, "ndim") and x.ndim in (2, 3))


class Emu3VisionVQImageProcessor(BaseImageProcessor):
    """Turns images (or video frames) into the pixel tensors Emu3's VQ encodes, and VQ output back into images.

    Accepts a PIL image, a uint8 array / tensor (`(H, W)`, `(H, W, C)` or `(C, H, W)`, C in 1, 3, 4), a
    list of those (a batch, or the frames of a video) or a 4-D uint8 array `(N, H, W, C)` / `(N, C, H, W)`.
    Each image is resized on its own (smart resize); with `return_tensors` the results are stacked to
    `(N, 3, H, W)` float32, which needs them all to land on the same size. With `return_tensors=None`,
    `pixel_values` is a list of `(3, H, W)` arrays and sizes may differ.

    Field names equal BAAI's `preprocessor_config.json`, so BAAI's folders load with `from_pretrained`.

    Example:
        >>> proc = Emu3VisionVQImageProcessor()  # BAAI's defaults; or .from_pretrained(vq_folder)
        >>> frames = [Image.new("RGB", (720, 480))] * 8  # (w, h)
        >>> proc(frames, return_tensors="pt").pixel_values.shape  # (T, 3, H, W)
        torch.Size([8, 3, 480, 720])
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = Emu3VisionVQImageProcessorKwargs

    def __init__(
        self,
        do_resize: bool = True,
        resample: int = Image.Resampling.BICUBIC,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] = (0.5, 0.5, 0.5),
        image_std: float | Sequence[float] = (0.5, 0.5, 0.5),
        do_convert_rgb: bool = True,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        spatial_factor: int = 8,
        size: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        size = dict(size or {})
        self.do_resize = do_resize
        self.resample = int(resample)
        self.do_rescale = do_rescale
        self.rescale_factor = check_finite("rescale_factor", rescale_factor)
        self.do_normalize = do_normalize
        self.image_mean = self._per_channel(image_mean, "image_mean")
        self.image_std = self._per_channel(image_std, "image_std")
        self.do_convert_rgb = do_convert_rgb
        # BAAI writes both `min_pixels`/`max_pixels` and `size`; the explicit fields win.
        self.min_pixels = int(min_pixels if min_pixels is not None else size.get("min_pixels", 512 * 512))
        self.max_pixels = int(max_pixels if max_pixels is not None else size.get("max_pixels", 1024 * 1024))
        self.spatial_factor = int(spatial_factor)
        self.size = {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels}
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"Need 0 < min_pixels <= max_pixels, got {self.min_pixels} and {self.max_pixels}.")
        if self.spatial_factor < 1:
            raise ValueError(f"spatial_factor must be a positive integer, got {spatial_factor}.")

    @staticmethod
    def _per_channel(value: float | Sequence[float], name: str) -> list[float]:
        values = [value] * 3 if isinstance(value, (int, float)) else list(value)
        values = [check_finite(name, v) for v in values]
        if len(values) != 3:
            raise ValueError(f"{name} needs one value per RGB channel (3), got {value!r}.")
        return values

    # ------------------------------------------------------------------ preprocessing
    def smart_resize(self, height: int, width: int) -> tuple[int, int]:
        """`smart_resize` with this processor's factor and pixel bounds."""
        return smart_resize(height, width, self.spatial_factor, self.min_pixels, self.max_pixels)

    def _to_pil(self, image: Any, do_convert_rgb: bool) -> Image.Image:
        if not isinstance(image, Image.Image):
            array = _to_numpy(image)
            if array.dtype != np.uint8:
                raise TypeError(
                    f"Got a {array.dtype} array; pass uint8 pixels in [0, 255] (e.g. "
                    "`(x * 255).round().astype(np.uint8)`) or PIL images, so that resizing matches BAAI's."
                )
            if array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
                array = array.transpose(1, 2, 0)  # CHW -> HWC
            if array.ndim == 3 and array.shape[-1] == 1:
                array = array[..., 0]
            if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
                raise ValueError(f"Cannot read an image of shape {array.shape}: use (H, W), (H, W, C) or (C, H, W).")
            image = Image.fromarray(np.ascontiguousarray(array))
        if image.mode != "RGB":
            if not do_convert_rgb:
                raise ValueError(f"Got a {image.mode!r} image with do_convert_rgb=False; convert it to RGB first.")
            image = image.convert("RGB")
        return image

    def _preprocess_one(self, image: Any, opts: dict[str, Any]) -> np.ndarray:
        pil = self._to_pil(image, opts["do_convert_rgb"])
        if opts["do_resize"]:
            height, width = smart_resize(
                pil.height, pil.width, opts["spatial_factor"], opts["min_pixels"], opts["max_pixels"]
            )
            pil = pil.resize((width, height), resample=Image.Resampling(opts["resample"]))
        pixels = np.asarray(pil, dtype=np.uint8)  # (H, W, 3)
        if opts["do_rescale"]:
            out = (pixels.astype(np.float64) * opts["rescale_factor"]).astype(np.float32)
        else:
            out = pixels.astype(np.float32)
        if opts["do_normalize"]:
            mean = np.asarray(opts["image_mean"], dtype=np.float32)
            std = np.asarray(opts["image_std"], dtype=np.float32)
            out = (out - mean) / std
        return np.ascontiguousarray(out.transpose(2, 0, 1))  # (3, H, W)

    def _flatten_inputs(self, images: Any) -> list[Any]:
        if _is_single_image(images):
            return [images]
        if hasattr(images, "ndim"):
            if images.ndim == 4:
                return list(images)
            raise ValueError(
                f"Got an array with {images.ndim} dimensions; pass one image (2-3 dims), a batch of frames "
                "(4 dims), or call the processor once per video."
            )
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("Got an empty list of images.")
            flat = []
            for item in images:
                if not _is_single_image(item):
                    raise TypeError(
                        f"Expected PIL images or 2-3 dim uint8 arrays in the list, got {type(item).__name__}"
                        f"{getattr(item, 'shape', '')}; for several videos, call the processor once per video."
                    )
                flat.append(item)
            return flat
        raise TypeError(
            f"Unsupported input type {type(images).__name__}: pass a PIL image, a uint8 numpy array or torch "
            "tensor, or a list of them."
        )

    def preprocess(
        self,
        images: Any,
        do_resize: bool | None = None,
        resample: int | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_convert_rgb: bool | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        spatial_factor: int | None = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Preprocess one image, a batch, or the frames of a video; every argument overrides the instance's.

        Returns:
            `BatchFeature` with `pixel_values`: `(N, 3, H, W)` float32 for `return_tensors="pt"` / `"np"`,
            a list of `(3, H, W)` arrays for `return_tensors=None`.
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)} for {type(self).__name__}.preprocess.")
        opts = {
            "do_resize": self.do_resize if do_resize is None else do_resize,
            "resample": self.resample if resample is None else int(resample),
            "do_rescale": self.do_rescale if do_rescale is None else do_rescale,
            "rescale_factor": self.rescale_factor if rescale_factor is None else check_finite("rescale_factor",
                                                                                               rescale_factor),
            "do_normalize": self.do_normalize if do_normalize is None else do_normalize,
            "image_mean": self.image_mean if image_mean is None else self._per_channel(image_mean, "image_mean"),
            "image_std": self.image_std if image_std is None else self._per_channel(image_std, "image_std"),
            "do_convert_rgb": self.do_convert_rgb if do_convert_rgb is None else do_convert_rgb,
            "min_pixels": self.min_pixels if min_pixels is None else min_pixels,
            "max_pixels": self.max_pixels if max_pixels is None else max_pixels,
            "spatial_factor": self.spatial_factor if spatial_factor is None else spatial_factor,
        }
        pixels = [self._preprocess_one(image, opts) for image in self._flatten_inputs(images)]
        if return_tensors is None:
            return BatchFeature(data={"pixel_values": pixels})
        shapes = sorted({p.shape[1:] for p in pixels})
        if len(shapes) > 1:
            raise ValueError(
                f"The images resize to different sizes {shapes} (h, w) and cannot be stacked into one tensor. "
                "Call the processor once per image, or use return_tensors=None to get a list."
            )
        return BatchFeature(data={"pixel_values": np.stack(pixels)}, tensor_type=return_tensors)

    # ------------------------------------------------------------------ postprocessing
    def postprocess(
        self,
        images: Any,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        return_tensors: str | None = PIL_OUTPUT,
    ) -> BatchFeature:
        """Turn VQ-decoded pixels back into images, as BAAI does (inverse normalisation, *255, clip, truncate).

        Args:
            images: `(3, H, W)`, `(N, 3, H, W)` or `(N, T, 3, H, W)` float pixels (tensor or array), or a list
                of `(3, H, W)` items.
            return_tensors: `"PIL.Image.Image"` (default): a list of PIL images (a list of frame lists for
                5-D input); `"np"`: uint8 `(..., H, W, 3)`; `"pt"`: uint8 tensor `(..., 3, H, W)`.
                Without rescaling, `"np"` / `"pt"` give float32 in the layout above.

        Example:
            >>> proc.postprocess(vq.decode(codes)).pixel_values[0].save("out.png")
        """
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        mean = self.image_mean if image_mean is None else self._per_channel(image_mean, "image_mean")
        std = self.image_std if image_std is None else self._per_channel(image_std, "image_std")
        if return_tensors not in (PIL_OUTPUT, "pil", "np", "pt"):
            raise ValueError(f"return_tensors must be 'PIL.Image.Image', 'np' or 'pt', got {return_tensors!r}.")

        if isinstance(images, (list, tuple)):
            x = np.stack([_to_numpy(im) for im in images]).astype(np.float32, copy=False)
        else:
            x = _to_numpy(images).astype(np.float32, copy=False)
        if x.ndim == 3:
            x = x[None]
        if x.ndim not in (4, 5) or x.shape[-3] != 3:
            raise ValueError(f"Expected pixels shaped (3, H, W), (N, 3, H, W) or (N, T, 3, H, W); got {x.shape}.")

        if do_normalize:
            # BAAI un-normalises with normalize(mean=-m/s, std=1/s), in float32.
            rev_mean = np.asarray([-m / s for m, s in zip(mean, std, strict=True)], dtype=np.float32)[:, None, None]
            rev_std = np.asarray([1 / s for s in std], dtype=np.float32)[:, None, None]
            x = (x - rev_mean) / rev_std
        if do_rescale:
            x = (x.astype(np.float64) * (1 / rescale_factor)).astype(np.float32)
            x = x.clip(0, 255).astype(np.uint8)  # truncates toward zero, like BAAI

        hwc = np.moveaxis(x, -3, -1)  # (..., H, W, 3)
        if return_tensors in (PIL_OUTPUT, "pil"):
            if x.dtype != np.uint8:
                raise ValueError("PIL output needs do_rescale=True (uint8 pixels); use return_tensors='np' instead.")
            if hwc.ndim == 5:
                out: Any = [[Image.fromarray(f) for f in video] for video in hwc]
            else:
                out = [Image.fromarray(im) for im in hwc]
            return BatchFeature(data={"pixel_values": out})
        if return_tensors == "np":
            return BatchFeature(data={"pixel_values": np.ascontiguousarray(hwc)})
        return BatchFeature(data={"pixel_values": np.ascontiguousarray(x)}, tensor_type="pt")
