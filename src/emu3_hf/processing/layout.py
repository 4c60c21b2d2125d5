"""Emu3's token layout for vision, written and read from ids alone (no tokenizer needed).

A vision block is ``[BOI] "h*w" [IMG] frame_1 ... frame_T [EOI]`` where every frame is h rows of
``w visual tokens + EOL`` followed by ``EOF``. An image is a video of one latent frame. ``"h*w"`` is plain text,
so it is tokenized by whoever builds the prompt; this module only needs its ids when writing a block, and reads
the grid size from the rows themselves when parsing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class SpecialIds:
    """The ids that shape Emu3 sequences. Build with :meth:`from_config` from an ``Emu3LMConfig``."""

    bos: int
    eos: int
    pad: int
    img: int
    boi: int
    eoi: int
    eol: int
    eof: int
    visual_offset: int
    codebook_size: int

    @classmethod
    def from_config(cls, config: Any) -> SpecialIds:
        """Every special id of an ``Emu3LMConfig``; raises naming the fields a config lacks."""
        names = ("pad_token_id", "bos_token_id", "eos_token_id", "img_token_id", "boi_token_id", "eoi_token_id",
                 "eol_token_id", "eof_token_id", "visual_token_offset", "codebook_size")  # fmt: skip
        missing = [name for name in names if getattr(config, name, None) is None]
        if missing:
            raise ValueError(
                f"The model config has no {', '.join(missing)}; Emu3's vision-token layout needs every special id. "
                "Load the model with emu3_hf (Emu3LMConfig carries them) or build SpecialIds(...) by hand."
            )
        eos = config.eos_token_id[0] if isinstance(config.eos_token_id, (list, tuple)) else config.eos_token_id
        return cls(
            bos=config.bos_token_id,
            eos=eos,
            pad=config.pad_token_id,
            img=config.img_token_id,
            boi=config.boi_token_id,
            eoi=config.eoi_token_id,
            eol=config.eol_token_id,
            eof=config.eof_token_id,
            visual_offset=config.visual_token_offset,
            codebook_size=config.codebook_size,
        )

    def is_visual(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= self.visual_offset) & (ids < self.visual_offset + self.codebook_size)


CODE = -1  # marker in a frame template: a visual token (a code) goes here


def frames_template(special: SpecialIds, height: int, width: int, num_frames: int = 1) -> torch.Tensor:
    """THE definition of Emu3's vision tokens after ``[IMG]``: per frame, ``height`` rows of ``width`` codes each
    closed by EOL, then EOF. Returns (num_frames * (height * (width + 1) + 1),) ids with :data:`CODE` where a code
    goes. The writer below fills it with codes; the generation schedule appends ``[EOI, EOS]`` and samples at the
    ``CODE`` positions; the parser reads the same structure back.
    """
    frame = torch.full((height, width + 1), CODE, dtype=torch.long)  # (h, w+1): w codes then EOL
    frame[:, width] = special.eol
    frame = torch.cat([frame.flatten(), torch.tensor([special.eof])])  # (h*(w+1) + 1,)
    return frame.repeat(num_frames)


def vision_block_ids(codes: torch.Tensor, special: SpecialIds, header_ids: list[int]) -> list[int]:
    """Ids of one vision block for a code grid ``(h, w)`` or a clip ``(T, h, w)``.

    ``header_ids`` are the token ids of the text ``f"{h}*{w}"``. Layout:
    ``[BOI] header [IMG] frames [EOI]`` with the frames of :func:`frames_template` (BAAI's understanding layout).
    """
    if codes.dim() == 2:
        codes = codes[None]
    if codes.dim() != 3:
        raise ValueError(f"codes must be (h, w) or (T, h, w), got shape {tuple(codes.shape)}.")
    codes = codes.long().cpu()
    if codes.numel() and (codes.min() < 0 or codes.max() >= special.codebook_size):
        raise ValueError(
            f"codes must lie in [0, {special.codebook_size}), got values in [{int(codes.min())}, {int(codes.max())}]."
        )
    t, h, w = codes.shape
    frames = frames_template(special, h, w, t)
    frames[frames == CODE] = codes.flatten() + special.visual_offset  # codes fill the template in reading order
    return [special.boi, *header_ids, special.img, *frames.tolist(), special.eoi]


@dataclass
class VisionSegment:
    """A parsed vision block: ``codes`` is ``(T, h, w)``; ``repaired`` says whether a repair rule fired."""

    codes: torch.Tensor
    repaired: bool = False


def _fit_row(row: list[int], width: int) -> list[int]:
    # Repair rule: a row that is too long is cut; one that is too short repeats its last code (or code 0).
    if len(row) >= width:
        return row[:width]
    return row + [row[-1] if row else 0] * (width - len(row))


def parse_vision_block(ids: list[int], special: SpecialIds, strict: bool = True) -> VisionSegment:
    """Parse the ids between ``[IMG]`` and ``[EOI]`` (exclusive) into codes ``(T, h, w)``.

    Rows end at EOL, frames at EOF. With ``strict=True`` any irregularity raises ``ValueError``. With
    ``strict=False`` these repairs apply: the width is that of the first row; longer rows are cut and shorter
    rows are padded with their last code; a frame with fewer rows than the first frame (an unclosed last frame
    included) gets its last row repeated; a trailing row not closed by EOL is dropped; ids that are neither
    visual tokens (of this codebook) nor EOL/EOF are dropped.
    """
    frames: list[list[list[int]]] = [[]]
    row: list[int] = []
    problems: list[str] = []
    for tok in ids:
        if special.visual_offset <= tok < special.visual_offset + special.codebook_size:
            row.append(tok - special.visual_offset)
        elif tok == special.eol:
            frames[-1].append(row)
            row = []
        elif tok == special.eof:
            if row:
                problems.append("a row is not closed by EOL before EOF")
                frames[-1].append(row)
                row = []
            frames.append([])
        else:
            problems.append(f"id {tok} is neither a visual token nor EOL/EOF")
    if row:
        problems.append("the last row is not closed by EOL")
    if not frames[-1]:
        frames.pop()  # the normal case: the block ended with EOF
    else:
        problems.append("the last frame is not closed by EOF")
    frames = [f for f in frames if f]
    if not frames:
        raise ValueError("The vision block holds no complete row of visual tokens; nothing can be decoded.")
    width = len(frames[0][0])
    height = len(frames[0])
    if any(len(r) != width for f in frames for r in f):
        lengths = sorted({len(r) for f in frames for r in f})
        problems.append(f"rows have unequal lengths {lengths}")
    if any(len(f) != height for f in frames):
        problems.append(f"frames have unequal row counts {[len(f) for f in frames]}")
    if strict and problems:
        raise ValueError(
            "Malformed vision block: " + "; ".join(dict.fromkeys(problems)) + ". Pass strict=False to repair it "
            "(rows cut/padded to the first row's width, short frames padded by repeating their last row)."
        )
    if width == 0:
        raise ValueError("The first row of the vision block is empty; the grid width cannot be determined.")
    fixed = []
    for f in frames:
        f = [_fit_row(r, width) for r in f][:height]
        f += [f[-1]] * (height - len(f))
        fixed.append(f)
    return VisionSegment(torch.tensor(fixed, dtype=torch.long), repaired=bool(problems))


def split_segments(
    ids: list[int] | torch.Tensor, special: SpecialIds, strict: bool = True
) -> list[list[int] | VisionSegment]:
    """Split one id sequence into text id runs and parsed vision blocks, in order.

    Text runs keep every id (BOS/EOS/pad included); a vision block spans ``[BOI] ... [EOI]``; its header text
    (``"h*w"``) is dropped. A block missing its EOI (generation cut short) runs to the end of the sequence
    (an error when ``strict``).
    """
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"split_segments takes one sequence (1-D), got shape {tuple(ids.shape)}.")
        ids = ids.tolist()
    out: list[list[int] | VisionSegment] = []
    text: list[int] = []
    i = 0
    while i < len(ids):
        if ids[i] != special.boi:
            text.append(ids[i])
            i += 1
            continue
        if text:
            out.append(text)
            text = []
        try:
            start = ids.index(special.img, i) + 1
        except ValueError:
            raise ValueError("A vision block opened by BOI has no IMG token after its size header.") from None
        try:
            end = ids.index(special.eoi, start)
        except ValueError:
            if strict:
                raise ValueError("A vision block has no closing EOI; pass strict=False to decode it anyway.") from None
            end = len(ids)
        out.append(parse_vision_block(ids[start:end], special, strict=strict))
        i = end + 1
    if text:
        out.append(text)
    return out


__all__ = [
    "CODE", "SpecialIds", "VisionSegment", "frames_template", "parse_vision_block", "split_segments", "vision_block_ids",
]
