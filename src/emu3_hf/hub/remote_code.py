"""Remote-code export: Emu3 folders that load through transformers' Auto classes without emu3-hf installed.

:func:`save_pretrained_with_code` writes what ``save_pretrained`` writes plus the Python files that define the
object's classes and ``auto_map`` entries naming them. On a machine where ``pip install emu3-hf`` is not possible,
``AutoModelForCausalLM`` / ``AutoModel`` / ``AutoTokenizer`` / ``AutoImageProcessor`` then load the folder with
``trust_remote_code=True`` and get the same classes, hence the same logits and codes.

Which files: the module defining each class and, recursively, the sibling modules it imports relatively
(``from .configuration_emu3 import Emu3LMConfig``), which is the closure transformers' dynamic-module loader copies
when it loads the folder. A module importing ``emu3_hf`` or a parent package (``from ..utils import x``) cannot be
loaded that way: the export refuses it before writing anything and names the import.

Example:
    ```python
    >>> from emu3_hf import Emu3LMForCausalLM
    >>> from emu3_hf.hub import save_pretrained_with_code
    >>> model = Emu3LMForCausalLM.from_pretrained("BAAI/Emu3-Gen")
    >>> save_pretrained_with_code(model, "emu3-gen-portable")
    >>> # later, in an environment without emu3-hf:
    >>> from transformers import AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_pretrained("emu3-gen-portable", trust_remote_code=True)
    ```
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusers import DiffusionPipeline
from transformers import PreTrainedModel
from transformers.configuration_utils import PreTrainedConfig
from transformers.dynamic_module_utils import get_imports, get_relative_imports

from ..modeling import Emu3LMConfig, Emu3LMForCausalLM, Emu3LMModel, Emu3VisionVQConfig, Emu3VisionVQModel
from ..processing import Emu3MultimodalProcessor, Emu3Tokenizer, Emu3VisionVQImageProcessor
from ..utils.atomic import staged_folder

_PACKAGE = __name__.split(".")[0]  # "emu3_hf": exported code must not need it


@dataclass(frozen=True)
class _CodePlan:
    """Code to write into one folder: the JSON file that gets ``auto_map`` and the classes it names."""

    subfolder: str
    json_file: str
    auto_map: dict[str, Any]  # Auto class name -> "module.Class" (or a [slow, fast] pair for tokenizers)
    classes: tuple[type, ...]


def code_reference(cls: type) -> str:
    """``auto_map`` value for ``cls``: ``"<module file stem>.<class name>"``, e.g. ``"modeling_emu3.Emu3LMModel"``."""
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def check_exportable(module_file: str | os.PathLike) -> list[Path]:
    """Check that a module can run as Hub remote code; return the sibling files it imports relatively.

    transformers' loader requires every absolute import of the file to be installed (so ``emu3_hf`` must not be
    one) and copies only flat siblings named by ``from .x import y`` (so ``from ..x`` and ``from .pkg.x`` break).

    Raises:
        ValueError: naming the file and the import that would fail in a process without emu3-hf.

    Example:
        ```python
        >>> from emu3_hf.modeling import modeling_emu3
        >>> [p.name for p in check_exportable(modeling_emu3.__file__)]
        ['configuration_emu3.py']
        ```
    """
    module_file = Path(module_file)
    if _PACKAGE in get_imports(module_file):
        raise ValueError(
            f"{module_file.name} imports `{_PACKAGE}`, which a process loading remote code does not have: exported "
            "modules may import only torch, transformers, their dependencies and sibling modules (`from .x import y`)."
        )
    siblings, outside = [], []
    for name in sorted(get_relative_imports(module_file)):
        path = module_file.parent / f"{name}.py"
        if name.startswith(".") or "." in name or not path.is_file():
            outside.append(f"`.{name}`")
        else:
            siblings.append(path)
    if outside:
        raise ValueError(
            f"{module_file.name} imports {', '.join(outside)}, which are not module files next to it: transformers' "
            "remote-code loader copies only flat sibling modules. Move what it needs into a sibling module of "
            f"{module_file.parent.name}/ that imports no {_PACKAGE} code."
        )
    return siblings


def code_files(classes: tuple[type, ...] | list[type]) -> list[Path]:
    """The module files defining ``classes`` plus every sibling they import relatively (recursively), checked.

    Example:
        ```python
        >>> sorted(p.name for p in code_files([Emu3LMForCausalLM]))
        ['configuration_emu3.py', 'modeling_emu3.py']
        ```
    """
    pending = [Path(sys.modules[cls.__module__].__file__) for cls in classes]
    found: list[Path] = []
    while pending:
        path = pending.pop()
        if path not in found:
            pending.extend(check_exportable(path))
            found.append(path)
    return found


def _model_plan(config: PreTrainedConfig, subfolder: str = "") -> _CodePlan:
    if isinstance(config, Emu3LMConfig):
        classes = {"AutoConfig": type(config), "AutoModel": Emu3LMModel, "AutoModelForCausalLM": Emu3LMForCausalLM}
    elif isinstance(config, Emu3VisionVQConfig):
        classes = {"AutoConfig": type(config), "AutoModel": Emu3VisionVQModel}
    else:
        raise TypeError(f"Only Emu3 configs and models can be exported with their code, got {type(config).__name__}.")
    auto_map = {name: code_reference(cls) for name, cls in classes.items()}
    return _CodePlan(subfolder, "config.json", auto_map, tuple(classes.values()))


def _plans(obj: Any, subfolder: str = "") -> list[_CodePlan]:
    """What to write for ``obj``; raises TypeError for objects without exportable Emu3 code."""
    if isinstance(obj, PreTrainedModel):
        return [_model_plan(obj.config, subfolder)]
    if isinstance(obj, PreTrainedConfig):
        return [_model_plan(obj, subfolder)]
    if isinstance(obj, Emu3Tokenizer):
        # transformers reads a tokenizer's auto_map as a [slow class, fast class] pair; Emu3Tokenizer is fast only.
        auto_map = {"AutoTokenizer": [None, code_reference(type(obj))]}
        return [_CodePlan(subfolder, "tokenizer_config.json", auto_map, (type(obj),))]
    if isinstance(obj, Emu3VisionVQImageProcessor):
        auto_map = {"AutoImageProcessor": code_reference(type(obj))}
        return [_CodePlan(subfolder, "preprocessor_config.json", auto_map, (type(obj),))]
    if isinstance(obj, Emu3MultimodalProcessor):
        # The processor's own auto_map, plus its tokenizer's (tokenizer_config.json); transformers keeps the image
        # processor's settings, and its auto_map, inside processor_config.json.
        processor = _CodePlan(subfolder, "processor_config.json", {"AutoProcessor": code_reference(type(obj))},
                              (type(obj), type(obj.image_processor)))
        return [processor, *_plans(obj.tokenizer, subfolder)]
    if isinstance(obj, DiffusionPipeline) and not subfolder:
        return [plan for name, component in obj.components.items() for plan in _plans(component, name)]
    raise TypeError(
        f"Cannot export the code of a {type(obj).__name__}: pass an Emu3 model or config, an Emu3Tokenizer, an "
        "Emu3VisionVQImageProcessor, an Emu3MultimodalProcessor or an Emu3 pipeline (each component gets its code)."
    )


def _write_code(folder: Path, plan: _CodePlan) -> None:
    """Copy the plan's module files into ``folder`` and merge its ``auto_map`` into the JSON file there."""
    json_path = folder / plan.json_file
    if not json_path.is_file():
        raise FileNotFoundError(f"save_pretrained wrote no {plan.json_file} in {folder}; cannot add an auto_map.")
    for path in code_files(plan.classes):
        shutil.copyfile(path, folder / path.name)
    data = json.loads(json_path.read_text(encoding="utf-8"))
    # Keys of other Auto classes stay; ours replace stale ones (BAAI's configs name BAAI's own remote classes).
    data["auto_map"] = {**(data.get("auto_map") or {}), **plan.auto_map}
    json_path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def save_pretrained_with_code(obj: Any, save_directory: str | os.PathLike, **save_kwargs: Any) -> Path:
    """``obj.save_pretrained(save_directory)`` plus the code and ``auto_map`` to load it without emu3-hf.

    Args:
        obj: an Emu3 model (LM or VQ) or config, an :class:`~emu3_hf.Emu3Tokenizer`, an
            :class:`~emu3_hf.Emu3VisionVQImageProcessor`, or an Emu3 pipeline (every component folder gets its
            code, and the pipeline folder a copy of all of it, which transformers reads for ``subfolder=`` loads).
            Several objects may be saved into one folder (an LM and its tokenizer, as in BAAI's repos).
        save_directory: the folder; written through a temporary folder next to it (nothing half written).
        save_kwargs: passed to ``save_pretrained`` (``max_shard_size``, ...).

    Returns:
        The folder. Load it with ``AutoModelForCausalLM`` / ``AutoModel`` / ``AutoTokenizer`` /
        ``AutoImageProcessor`` ``.from_pretrained(folder, trust_remote_code=True)`` (a pipeline's components with
        ``subfolder="model"`` and so on); with emu3-hf imported the folder loads as before, without the flag.

    Example:
        ```python
        >>> save_pretrained_with_code(model, "emu3-portable")
        >>> save_pretrained_with_code(tokenizer, "emu3-portable")
        >>> sorted(p.name for p in Path("emu3-portable").glob("*.py"))
        ['configuration_emu3.py', 'modeling_emu3.py', 'tokenization_emu3.py']
        ```
    """
    plans = _plans(obj)
    for plan in plans:  # refuse unexportable code before any weights are written
        code_files(plan.classes)
    with staged_folder(save_directory) as staging:
        obj.save_pretrained(staging, **save_kwargs)
        for plan in plans:
            _write_code(staging / plan.subfolder, plan)
        if isinstance(obj, DiffusionPipeline):
            # transformers fetches remote code from the repo root even with `subfolder=`: a copy there makes
            # `AutoModelForCausalLM.from_pretrained(repo, subfolder="model", trust_remote_code=True)` work.
            for path in code_files([cls for plan in plans for cls in plan.classes]):
                shutil.copyfile(path, staging / path.name)
    return Path(save_directory)


def has_exported_code(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds an Emu3 config whose ``auto_map`` names this package's exported config class and
    whose module file lies next to it (BAAI's folders name BAAI's own ``Emu3Config`` instead)."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        return False
    config = json.loads(config_path.read_text(encoding="utf-8"))
    ours = {cls.model_type: code_reference(cls) for cls in (Emu3LMConfig, Emu3VisionVQConfig)}
    reference = (config.get("auto_map") or {}).get("AutoConfig")
    return reference is not None and reference == ours.get(config.get("model_type")) and (
        Path(folder) / f"{reference.rsplit('.', 1)[0]}.py"
    ).is_file()


__all__ = ["check_exportable", "code_files", "code_reference", "has_exported_code", "save_pretrained_with_code"]
