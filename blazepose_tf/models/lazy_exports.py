"""Names a module re-exports from modules that need Keras and TensorFlow, imported on first use (PEP 562), so that
a command answers ``--help`` or a bad flag without TensorFlow's start-up."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping, Optional, Sequence


def lazy_getattr(module: str, sources: Mapping[str, Sequence[str]],
                 before: Optional[Callable[[], None]] = None) -> Callable[[str], Any]:
    """The module-level ``__getattr__`` of ``module``: a name of ``sources`` ({source module: names}) is imported
    from its source on first use (after calling ``before``, if given) and kept in ``module``; any other name is an
    AttributeError."""
    where = {name: source for source, names in sources.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        if before is not None:
            before()
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[module], name, value)
        return value

    return __getattr__
