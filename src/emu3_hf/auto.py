"""Registration with transformers' Auto classes (armed on ``import emu3_hf``).

BAAI's folders say ``model_type: "Emu3"`` / ``"Emu3VisionVQ"`` and name ``Emu3Tokenizer`` and
``Emu3VisionVQImageProcessor``; registering our classes under exactly those keys makes every Auto class resolve
them locally, without ``trust_remote_code``. transformers' own ``"emu3"`` model type is left untouched.

Registering a class needs the class, and the models, the image processor and the processor need
``transformers.modeling_utils``, which takes seconds to import (it pulls torchao, accelerate, torch.distributed's
tensor code and sympy); transformers' own ``AutoImageProcessor`` and ``AutoProcessor`` modules import it too. So
``import emu3_hf`` registers each group with its Auto module the moment transformers finishes importing that module
(at once when it already has), which is before any caller can reach that Auto class. A small ``sys.meta_path``
finder watches ``transformers.*`` and ``emu3_hf.*`` imports until every group is registered, then removes itself; it
registers only when no such import is half done, so our modules never see a partially initialized transformers
module (``transformers.modeling_layers``, say, imports ``AutoModel`` before it defines its own classes).
``register_auto_classes()`` registers everything at once.
"""

from __future__ import annotations

import importlib
import sys
import threading
import warnings
from collections.abc import Callable
from types import ModuleType


def _register_configs() -> None:
    from transformers.models.auto.configuration_auto import AutoConfig

    from .modeling.configuration_emu3 import Emu3LMConfig
    from .modeling.configuration_emu3visionvq import Emu3VisionVQConfig

    AutoConfig.register(Emu3LMConfig.model_type, Emu3LMConfig, exist_ok=True)
    AutoConfig.register(Emu3VisionVQConfig.model_type, Emu3VisionVQConfig, exist_ok=True)


def _register_models() -> None:
    from transformers.models.auto.modeling_auto import AutoModel, AutoModelForCausalLM

    from .modeling.configuration_emu3 import Emu3LMConfig
    from .modeling.configuration_emu3visionvq import Emu3VisionVQConfig
    from .modeling.modeling_emu3 import Emu3LMForCausalLM, Emu3LMModel
    from .modeling.modeling_emu3visionvq import Emu3VisionVQModel

    AutoModel.register(Emu3LMConfig, Emu3LMModel, exist_ok=True)
    AutoModelForCausalLM.register(Emu3LMConfig, Emu3LMForCausalLM, exist_ok=True)
    AutoModel.register(Emu3VisionVQConfig, Emu3VisionVQModel, exist_ok=True)


def _register_tokenizer() -> None:
    from transformers.models.auto.tokenization_auto import AutoTokenizer

    from .modeling.configuration_emu3 import Emu3LMConfig
    from .processing.tokenization_emu3 import Emu3Tokenizer

    AutoTokenizer.register(Emu3LMConfig, fast_tokenizer_class=Emu3Tokenizer, exist_ok=True)


def _register_image_processor() -> None:
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    from .modeling.configuration_emu3visionvq import Emu3VisionVQConfig
    from .processing.image_processing_emu3visionvq import Emu3VisionVQImageProcessor

    AutoImageProcessor.register(
        Emu3VisionVQConfig, slow_image_processor_class=Emu3VisionVQImageProcessor, exist_ok=True
    )


def _register_processor() -> None:
    from transformers.models.auto.processing_auto import AutoProcessor

    from .modeling.configuration_emu3 import Emu3LMConfig
    from .processing.processing_emu3 import Emu3MultimodalProcessor

    AutoProcessor.register(Emu3LMConfig, Emu3MultimodalProcessor, exist_ok=True)


# transformers module that defines the Auto class(es) -> the registration that needs it.
_REGISTRATIONS: dict[str, Callable[[], None]] = {
    "transformers.models.auto.configuration_auto": _register_configs,
    "transformers.models.auto.modeling_auto": _register_models,
    "transformers.models.auto.tokenization_auto": _register_tokenizer,
    "transformers.models.auto.image_processing_auto": _register_image_processor,
    "transformers.models.auto.processing_auto": _register_processor,
}
_WATCHED_PREFIXES = ("transformers.", "emu3_hf.")

_state = threading.Lock()  # guards the three collections and the counter below
_registered: set[str] = set()  # keys of _REGISTRATIONS already done
_waiting: set[str] = set()  # Auto modules not imported yet
_ready: list[str] = []  # Auto modules imported, registration not yet run (an import was half done)
_imports_in_progress = 0  # watched imports started through the finder and not finished
_running = threading.Lock()  # held while registrations run; nested imports then leave the work to the holder


def _is_initializing(module: ModuleType | None) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _half_done_import(finished: str | None) -> bool:
    """Is a ``transformers.*`` / ``emu3_hf.*`` import half done? ``finished``: a module that has just run (importlib
    still marks it initializing) or, during ``import emu3_hf``, the package itself."""
    if _imports_in_progress:
        return True
    return any(
        name != finished and name.startswith(_WATCHED_PREFIXES) and _is_initializing(module)
        for name, module in list(sys.modules.items())
    )


def _run(name: str, strict: bool = False) -> None:
    with _state:
        if name in _registered:
            return
        _registered.add(name)
    try:
        _REGISTRATIONS[name]()
    except Exception as exc:
        with _state:
            _registered.discard(name)
        if strict:
            raise
        # Never break the import (often transformers' own) that triggered this; say so loudly instead.
        warnings.warn(
            f"emu3_hf could not register its classes with {name}: {exc!r}; "
            "call emu3_hf.register_auto_classes() to see the full error.",
            RuntimeWarning,
            stacklevel=2,
        )


def _run_ready(finished: str | None) -> None:
    """Run the registrations whose Auto module has been imported, once no watched import is half done."""
    while _ready and not _half_done_import(finished):
        if not _running.acquire(blocking=False):
            return  # this thread (a registration's own imports) or another one runs them, and loops again after
        try:
            while not _half_done_import(finished):
                with _state:
                    if not _ready:
                        break
                    name = _ready.pop(0)
                _run(name)
        finally:
            _running.release()
    with _state:
        if not _waiting and not _ready and _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)


class _Loader:
    """Delegates to the real loader; counts the import while it runs and, once it succeeds, runs what became ready."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str):
        if name == "_loader":  # not set yet (a copy, say): no recursion
            raise AttributeError(name)
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        global _imports_in_progress
        with _state:
            _imports_in_progress += 1
        try:
            self._loader.exec_module(module)
        finally:
            with _state:
                _imports_in_progress -= 1
            # Leave no trace: the module keeps its own loader (reload, inspect, resources).
            if getattr(module, "__loader__", None) is self:
                module.__loader__ = self._loader
            if getattr(module.__spec__, "loader", None) is self:
                module.__spec__.loader = self._loader
        name = module.__spec__.name
        with _state:
            if name in _waiting:
                _waiting.discard(name)
                _ready.append(name)
        if _ready:
            _run_ready(finished=name)


class _Finder:
    """First on ``sys.meta_path`` while registrations are pending; wraps the loader of watched modules."""

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith(_WATCHED_PREFIXES):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader)
        return spec


_FINDER = _Finder()


def register_on_import() -> None:
    """Register with each Auto class now if transformers has imported its module, else when it does (run by
    ``import emu3_hf``)."""
    now = []
    with _state:
        for name in _REGISTRATIONS:
            if name in _registered or name in _waiting or name in _ready:
                continue
            module = sys.modules.get(name)
            if module is None:
                _waiting.add(name)
            elif _is_initializing(module):
                _ready.append(name)
            else:
                now.append(name)
        if (_waiting or _ready) and _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
    for name in now:
        _run(name)
    _run_ready(finished=__name__.rpartition(".")[0])  # anything that became ready meanwhile (not the package)


def register_auto_classes() -> None:
    """Register the Emu3 classes with all the Auto classes now; idempotent."""
    for name in _REGISTRATIONS:
        importlib.import_module(name)
        with _state:
            _waiting.discard(name)
            if name in _ready:
                _ready.remove(name)
        _run(name, strict=True)
    with _state:
        if _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
