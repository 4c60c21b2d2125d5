"""diffusers-style Emu3 pipelines built on the shared generation engine.

Importing this module also makes diffusers' generic ``DiffusionPipeline.from_pretrained(folder)`` return them (see
:mod:`.registration`).

Example:
    ```python
    >>> from emu3_hf.pipelines import Emu3Pipeline
    >>> pipe = Emu3Pipeline.from_baai("BAAI/Emu3-Gen", "BAAI/Emu3-VisionTokenizer")
    ```

Three sibling ``DiffusionPipeline`` classes over the same four components: :class:`Emu3Pipeline` (text-to-image),
:class:`Emu3VideoPipeline` (text-to-video, continuation) and :class:`Emu3ChatPipeline` (understanding). What they
share lives in :mod:`.base` (:class:`~.base.Emu3PipelineBase`, :class:`~.base.Emu3VisualPipelineBase`).
"""

from .base import Emu3PipelineBase, Emu3VisualPipelineBase
from .outputs import Emu3PipelineOutput
from .pipeline_emu3 import (
    BAAI_GUIDANCE_SCALE,
    BAAI_NEGATIVE_PROMPT,
    BAAI_POSITIVE_PROMPT_SUFFIX,
    OUTPUT_TYPES,
    Emu3Pipeline,
)
from .pipeline_emu3_chat import Emu3ChatPipeline, Emu3ChatPipelineOutput
from .pipeline_emu3_video import Emu3VideoPipeline, Emu3VideoPipelineOutput
from .registration import register_diffusers_pipelines

register_diffusers_pipelines(Emu3Pipeline, Emu3VideoPipeline, Emu3ChatPipeline)

__all__ = [
    "BAAI_GUIDANCE_SCALE",
    "BAAI_NEGATIVE_PROMPT",
    "BAAI_POSITIVE_PROMPT_SUFFIX",
    "OUTPUT_TYPES",
    "Emu3ChatPipeline",
    "Emu3ChatPipelineOutput",
    "Emu3Pipeline",
    "Emu3PipelineBase",
    "Emu3VisualPipelineBase",
    "Emu3PipelineOutput",
    "Emu3VideoPipeline",
    "Emu3VideoPipelineOutput",
    "register_diffusers_pipelines",
]
