"""diffusers-style Emu3 pipelines built on the shared generation engine.

Example:
    ```python
    >>> from emu3_hf.pipelines import Emu3Pipeline
    >>> pipe = Emu3Pipeline.from_baai("BAAI/Emu3-Gen", "BAAI/Emu3-VisionTokenizer")
    ```
"""

from .outputs import Emu3PipelineOutput
from .pipeline_emu3 import BAAI_NEGATIVE_PROMPT, BAAI_POSITIVE_PROMPT_SUFFIX, OUTPUT_TYPES, Emu3Pipeline

__all__ = ["BAAI_NEGATIVE_PROMPT", "BAAI_POSITIVE_PROMPT_SUFFIX", "OUTPUT_TYPES", "Emu3Pipeline", "Emu3PipelineOutput"]
