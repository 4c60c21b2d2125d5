"""One clear error for checkpoints that cannot be loaded, shared by the LM and the VQ.

transformers surfaces a truncated or corrupted safetensors file as the Rust reader's ``SafetensorError`` ("incomplete
metadata, file not fully covered") and a config that disagrees with the weights as a ``RuntimeError`` about
``ignore_mismatched_sizes``; neither names the folder or the fix. :class:`ClearLoadErrors` re-raises both as an
``OSError`` / ``ValueError`` that does, keeping the original as the cause.

This module imports only transformers' dependencies so it can be exported with the modeling files as remote code.

Example:
    ```python
    >>> Emu3LMForCausalLM.from_pretrained("folder-with-a-truncated-file")
    OSError: Could not read the weights in 'folder-with-a-truncated-file': the safetensors file is truncated or ...
    ```
"""

from __future__ import annotations

from safetensors import SafetensorError


class ClearLoadErrors:
    """Mixin for ``PreTrainedModel`` subclasses: ``from_pretrained`` with errors that name the checkpoint."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        where = f"{str(pretrained_model_name_or_path)!r}" + (f" (subfolder {kwargs['subfolder']!r})"
                                                             if kwargs.get("subfolder") else "")
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as err:
            raise OSError(
                f"Could not read the weights in {where}: the safetensors file is truncated or corrupted ({err}). "
                "Download or copy the checkpoint again."
            ) from err
        except RuntimeError as err:
            if "ignore_mismatched_sizes" not in str(err):
                raise
            raise ValueError(
                f"The weights in {where} do not have the shapes its config.json describes (see the MISMATCH report "
                f"above): the config belongs to another model size. Use the config saved with these weights. ({err})"
            ) from err


__all__ = ["ClearLoadErrors"]
