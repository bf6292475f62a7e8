"""Shoal: self-hostable serverless compute for Python.

Importing this package must stay cheap and must not load the native extension ``shoal._native``:
containers without it import ``shoal`` too. Modules that need a connection import it lazily
(see ``shoal._client``); ``cloudpickle`` is imported on the first call, not here.

The surface follows Modal's (``import shoal as modal`` works where the feature exists); the 2023
names (``Stub``, ``keep_warm=``, ``Function.lookup``...) are aliases that emit a
``DeprecationWarning``.
"""

__version__ = "0.1.0"

from . import exception  # noqa: E402
from ._app import App, LocalEntrypoint, Stub  # noqa: E402
from ._cls import Cls, Obj  # noqa: E402
from ._functions import Function, FunctionCall  # noqa: E402
from ._options import Retries  # noqa: E402
from ._partial import concurrent, enter, exit, method, parameter  # noqa: E402,A004
from .dict import Dict  # noqa: E402 - queues and dicts connect on first use
from .image import Image  # noqa: E402
from .queue import Queue  # noqa: E402
from .secret import Secret  # noqa: E402

__all__ = [
    "__version__",
    "App",
    "Cls",
    "Dict",
    "Function",
    "FunctionCall",
    "Image",
    "LocalEntrypoint",
    "Obj",
    "Queue",
    "Retries",
    "Secret",
    "Stub",
    "concurrent",
    "enter",
    "exception",
    "exit",
    "method",
    "parameter",
]
