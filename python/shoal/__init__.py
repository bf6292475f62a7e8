"""Shoal: self-hostable serverless compute for Python.

Importing this package must stay cheap and must not load the native extension ``shoal._native``:
containers without it import ``shoal`` too. Modules that need a connection import it lazily
(see ``shoal._client``).
"""

__version__ = "0.1.0"

from . import exception  # noqa: E402

__all__ = ["__version__", "exception"]
