"""Make ``diffusers.DiffusionPipeline.from_pretrained`` return Emu3's pipelines for folders that name them.

``model_index.json`` records a pipeline's class by its bare name (``"_class_name": "Emu3Pipeline"``), and diffusers'
generic loader resolves that name as an attribute of the ``diffusers`` package itself; the components, recorded by
full module path (``emu3_hf.modeling.modeling_emu3``), it resolves from ``sys.modules``, never importing a module a
folder names (diffusers 0.42.1: "Diffusers does not import a module just because the repository names one"). So
once this package's pipelines are imported, a folder loads with the generic entry point, including every folder
written before this module existed (the shipped ``assets/emu3-tiny`` among them), provided the ``diffusers``
namespace knows the class names. :func:`register_diffusers_pipelines` adds them there; importing
:mod:`emu3_hf.pipelines` calls it. It never replaces a class diffusers itself defines under the same name.

Example:
    ```python
    >>> import emu3_hf.pipelines  # registers Emu3Pipeline, Emu3VideoPipeline, Emu3ChatPipeline with diffusers
    >>> from diffusers import DiffusionPipeline
    >>> type(DiffusionPipeline.from_pretrained("emu3-gen-pipeline")).__name__  # a folder written by save_pretrained
    'Emu3Pipeline'
    ```
"""

from __future__ import annotations

import diffusers
from diffusers import DiffusionPipeline


def register_diffusers_pipelines(*classes: type[DiffusionPipeline]) -> None:
    """Expose ``classes`` (default: the Emu3 pipelines) as ``diffusers.<ClassName>``, where diffusers'
    ``DiffusionPipeline.from_pretrained`` looks up a folder's ``_class_name``. Idempotent.

    Raises:
        TypeError: a class that is not a ``DiffusionPipeline`` subclass.
        ValueError: diffusers already defines another class under that name (it is left as it is).
    """
    if not classes:
        from .pipeline_emu3 import Emu3Pipeline
        from .pipeline_emu3_chat import Emu3ChatPipeline
        from .pipeline_emu3_video import Emu3VideoPipeline

        classes = (Emu3Pipeline, Emu3VideoPipeline, Emu3ChatPipeline)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, DiffusionPipeline)):
            raise TypeError(f"register_diffusers_pipelines takes DiffusionPipeline subclasses, got {cls!r}.")
        existing = getattr(diffusers, cls.__name__, None)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"diffusers already defines {cls.__name__} ({existing.__module__}); {cls.__module__}.{cls.__name__} "
                "was not registered. Load such folders with the class itself: "
                f"{cls.__name__}.from_pretrained(folder)."
            )
        setattr(diffusers, cls.__name__, cls)


__all__ = ["register_diffusers_pipelines"]
