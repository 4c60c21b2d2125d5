"""Fetching Emu3 pipeline repos from the Hub (into the huggingface_hub cache, ``HF_HUB_OFFLINE`` respected).

An emu3-hf pipeline folder names its components' classes by full module path (``emu3_hf.modeling.modeling_emu3``)
in ``model_index.json``. diffusers resolves those from ``sys.modules`` for a local folder, but its
``DiffusionPipeline.download`` (the repo-id path of ``from_pretrained``) accepts only components of diffusers,
transformers and a few other libraries and refuses ours before downloading anything. :func:`download_pipeline`
downloads such a repo instead; ``Emu3Pipeline.download`` delegating to it makes ``from_pretrained("org/repo")``
work like it does for a local folder.

Example:
    ```python
    >>> from emu3_hf import Emu3Pipeline
    >>> from emu3_hf.hub import download_pipeline
    >>> pipe = Emu3Pipeline.from_pretrained(download_pipeline("me/emu3-cats"))
    ```
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.utils import validate_repo_id

# Weights in pickle-based formats are never fetched: the package loads safetensors only.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.msgpack", "*.h5")


def download_pipeline(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    proxies: dict | None = None,
    custom_pipeline: str | None = None,
    variant: str | None = None,
    **kwargs: Any,
) -> str:
    """Download an Emu3 pipeline repo (``model_index.json`` + component folders) and return its local folder.

    Only ``model_index.json``, ``README.md`` and the folders of the components it lists are fetched, without
    pickle-format weights; components passed to ``from_pretrained`` as objects (``model=my_lm``) are skipped, as
    diffusers does. Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) the cached snapshot is returned.

    Args:
        repo_id: ``"namespace/name"`` of a repo written by an Emu3 pipeline's ``save_pretrained`` / push helper.
        revision, cache_dir, token, local_files_only, force_download: as in huggingface_hub's
            ``snapshot_download``.
        proxies, custom_pipeline, variant: diffusers' arguments; only their defaults are supported here.
        kwargs: the other arguments diffusers' ``from_pretrained`` passes to ``download`` (component objects,
            loading flags such as ``use_safetensors``); only the component objects matter here.

    Example:
        ```python
        >>> folder = download_pipeline("me/emu3-cats", revision="main")
        >>> sorted(p.name for p in Path(folder).iterdir())
        ['README.md', 'image_processor', 'model', 'model_index.json', 'tokenizer', 'vq_model']
        ```
    """
    validate_repo_id(repo_id)
    unsupported = {"proxies": proxies, "custom_pipeline": custom_pipeline, "variant": variant}
    for name, value in unsupported.items():
        if value is not None:
            raise ValueError(
                f"`{name}={value!r}` is not supported for Emu3 pipeline repos; leave it unset (for proxies set the "
                "HTTPS_PROXY environment variable)."
            )
    hub_kwargs = dict(revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
    index_file = hf_hub_download(repo_id, "model_index.json", force_download=force_download, **hub_kwargs)
    index = json.loads(Path(index_file).read_text(encoding="utf-8"))
    components = [name for name, spec in index.items() if isinstance(spec, list) and not name.startswith("_")]
    passed = {name for name in components if kwargs.get(name) is not None}
    allow = ["model_index.json", "README.md", *(f"{name}/*" for name in components if name not in passed)]
    return snapshot_download(
        repo_id,
        allow_patterns=allow,
        ignore_patterns=list(PICKLE_PATTERNS),
        force_download=force_download,
        **hub_kwargs,
    )


def check_model_source(name: str, value: str | os.PathLike | None) -> None:
    """Refuse a model location that is neither an existing folder nor a valid Hub repo id, naming ``name`` (the
    argument or option) -- before diffusers or transformers answer "neither a valid local path nor a valid repo id".

    A path that does not exist is allowed only when it could be a repo id (``org/name``, not starting with ``.``,
    ``/`` or ``~``): whether that repo exists is the Hub's to say. An existing file (not a folder) is refused.

    Example:
        ```python
        >>> check_model_source("model", "BAAI/Emu3-Gen")  # a repo id: fine
        >>> check_model_source("model", "./no-such-folder")
        Traceback (most recent call last):
        ValueError: model: ./no-such-folder is no folder (and not a Hub repo id such as 'BAAI/Emu3-Gen'); ...
        ```
    """
    if value is None:
        return
    path = Path(value)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{name}: {value} is a file; pass the model's folder (or a Hub repo id).")
        return
    text = str(value)
    local = text.startswith((".", "/", "~", "\\")) or text.count("/") > 1 or os.sep != "/" and os.sep in text
    if not local:
        try:
            validate_repo_id(text)
        except ValueError:  # HFValidationError
            local = True
    if local:
        raise ValueError(f"{name}: {value} is no folder (and not a Hub repo id such as 'BAAI/Emu3-Gen'); check the "
                         "path.")  # fmt: skip


__all__ = ["PICKLE_PATTERNS", "check_model_source", "download_pipeline"]
