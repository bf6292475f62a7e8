"""Exceptions raised by Shoal.

Every error Shoal raises derives from :class:`Error`, so ``except shoal.exception.Error`` catches
them all. The names follow Modal's ``modal.exception`` so that code written for Modal keeps working
with ``import shoal as modal``.

Errors coming from ``shoald`` carry the wire code they were sent with in ``.code``
(``"not_found"``, ``"unauthenticated"``, ... see ``runtime/errc.hpp``); errors raised locally have
``code = None``.
"""

from __future__ import annotations

import builtins
import re

__all__ = [
    "Error",
    "AuthError",
    "NotFoundError",
    "AlreadyExistsError",
    "InvalidError",
    "PermissionDeniedError",
    "ConnectionError",
    "TimeoutError",
    "ResourceExhaustedError",
    "ExecutionError",
    "InternalError",
    "RemoteError",
    "FunctionTimeoutError",
    "InputCancellation",
    "SerializationError",
    "DeserializationError",
    "ImageBuildError",
    "RemoteTraceback",
    "from_rpc_error",
]


class Error(Exception):
    """Base class of every Shoal error."""

    #: The wire code from shoald ("not_found", ...), or None when the error was raised locally.
    code: str | None = None


class AuthError(Error):
    """The server does not accept the token: missing, unknown or revoked."""


class NotFoundError(Error):
    """The named object (actor, token, app, volume...) does not exist."""


class AlreadyExistsError(Error):
    """An object with that name exists already."""


class InvalidError(Error):
    """A request or a configuration value is malformed; the message names the offending value."""


class PermissionDeniedError(Error):
    """The token is valid, but its environment does not cover the object."""


class ConnectionError(Error):  # noqa: A001 - deliberately the same name as modal.exception's
    """shoald cannot be reached, or the connection to it was lost.

    Not a subclass of the builtin ``ConnectionError`` (an ``OSError``), as in Modal; refer to the
    builtin as ``builtins.ConnectionError`` in this module.
    """


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001
    """A deadline passed before the work finished.

    Also a builtin ``TimeoutError``, so ``except TimeoutError`` catches it in user code.
    """


class ResourceExhaustedError(Error):
    """A configured limit was reached; the message states the limit."""


class ExecutionError(Error):
    """Something went wrong while running the work, on the server side (storage failure,
    incompatible state directory, cancellation by an operator...)."""


class InternalError(Error):
    """A bug in Shoal. The message carries the context needed to report it."""


class RemoteError(Error):
    """A remote function raised an exception whose type cannot be imported locally; the message
    carries its type name, text and remote traceback."""


class FunctionTimeoutError(TimeoutError):
    """A function call ran past its ``timeout=``."""


class InputCancellation(BaseException):
    """Raised inside a container when the input it is working on is cancelled.

    A ``BaseException`` (as in Modal) so that a bare ``except Exception`` in user code does not
    swallow the cancellation.
    """


class SerializationError(Error):
    """Arguments or a return value could not be serialized (pickled) for transport."""


class DeserializationError(Error):
    """Arguments or a return value could not be deserialized, typically because the local and
    remote Python environments differ."""


class ImageBuildError(Error):
    """A step of an image build failed (its command exited non-zero, a registry pull failed...).
    The message names the step ("image build failed at step 3/4 (RUN make): exit code 2") and
    ends with the step's last output lines; ``.step`` (1-based), ``.exit_code`` (or None) and
    ``.output`` (those lines) carry the same."""

    step: int | None = None
    exit_code: int | None = None
    output: list[str] = []


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a container, as text.

    Never raised by itself: a remote exception re-raised locally carries it as ``__cause__``
    (``raise exc from RemoteTraceback(text)``), so Python prints the container's traceback first,
    then "The above exception was the direct cause of the following exception", then the local
    frames — as ``concurrent.futures.ProcessPoolExecutor`` does.
    """

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text.rstrip("\n")


_CLASS_OF_CODE: dict[str, type[Error]] = {
    "invalid_argument": InvalidError,
    "not_found": NotFoundError,
    "already_exists": AlreadyExistsError,
    "unauthenticated": AuthError,
    "permission_denied": PermissionDeniedError,
    "unavailable": ConnectionError,
    "storage_failure": ExecutionError,
    "incompatible_state": ExecutionError,
    "state_dir_locked": ExecutionError,
    "resource_exhausted": ResourceExhaustedError,
    "timeout": TimeoutError,
    "cancelled": ExecutionError,
    "internal": InternalError,
}

_CODE_PREFIX = re.compile(r"^\s*\[([a-z_]+)\]\s*")


def error_class(code: str | None) -> type[Error]:
    """The exception class for a wire code; :class:`InternalError` for codes this SDK does not
    know (a newer server)."""
    return _CLASS_OF_CODE.get(code or "", InternalError)


def rpc_message(e: BaseException) -> str:
    """The human-readable message of a native ``RpcError`` (or any exception), without the
    ``[code] `` prefix that Cap'n Proto descriptions carry on the wire."""
    message = getattr(e, "message", None)
    if not isinstance(message, str) or not message:
        message = str(e)
    return _CODE_PREFIX.sub("", message, count=1).strip()


def rpc_code(e: BaseException) -> str:
    """The wire code of a native ``RpcError``; parsed from a ``[code]`` prefix if the ``.code``
    attribute is missing, else ``"internal"``."""
    code = getattr(e, "code", None)
    if isinstance(code, str) and code:
        return code
    message = getattr(e, "message", None) or str(e)
    match = _CODE_PREFIX.match(message)
    return match.group(1) if match else "internal"


def from_rpc_error(e: BaseException, message: str | None = None) -> Error:
    """Converts a native ``shoal._native.RpcError`` into the matching :class:`Error` subclass.

    ``message`` replaces the server's message when given (callers use it to add context such as
    the server address). The returned exception has ``.code`` set; raise it ``from e``.
    """
    code = rpc_code(e)
    exc = error_class(code)(message if message is not None else rpc_message(e))
    exc.code = code
    return exc
