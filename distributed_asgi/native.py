"""Whether this package runs compiled, and a warning when its compiled modules are stale.

``make compile`` (compile_native.py) builds the per-request modules with mypyc into C extensions
beside their sources, which Python imports instead of the ``.py`` files. An extension older
than its source runs the code as it was before the edit, so importing the package warns about
it, naming the way out.
"""

from __future__ import annotations

import sysconfig
import warnings
from pathlib import Path

__all__ = ["compiled", "stale_modules", "warn_if_stale"]

_PACKAGE = Path(__file__).resolve().parent
_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def compiled() -> bool:
    """Whether the modules of the request path run as mypyc-compiled extensions."""
    return (_PACKAGE / ("_native__mypyc" + _SUFFIX)).exists()


def stale_modules() -> list[str]:
    """The modules whose compiled extension is older than their source, as dotted names."""
    stale = []
    for extension in sorted(_PACKAGE.rglob("*" + _SUFFIX)):
        source = extension.with_name(extension.name[: -len(_SUFFIX)] + ".py")
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
            parts = source.relative_to(_PACKAGE.parent).with_suffix("").parts
            stale.append(".".join(parts))
    return stale


def warn_if_stale() -> None:
    stale = stale_modules()
    if stale:
        warnings.warn(
            f"distributed_asgi: the compiled build of {', '.join(stale)} is older than the "
            "source, so the old code runs: run `make compile` to rebuild, or `make clean-native` "
            "to run the sources",
            RuntimeWarning,
            stacklevel=2,
        )
