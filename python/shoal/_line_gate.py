"""Keeps the lines an app's containers print from landing inside a line the local code is printing.

``print("result", f.remote(x))`` writes ``result``, `` ``, ``64`` and ``\\n`` as four writes; a
container's log line printed by the log thread between two of them would split the user's line
(``result [ct-1] squaring 8\\n64``). While an app runs with its logs shown, ``sys.stdout`` and
``sys.stderr`` are wrapped in a :class:`LineGate` that remembers whether the local code left a
line unfinished; a container line waits (at most :data:`WAIT_S`, so a progress bar without
newlines cannot hold the logs back) until that line is finished, then is written whole.
Everything else (``flush``, ``isatty``, ``buffer``, ``encoding``...) goes to the wrapped stream.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Iterable, List, Tuple

#: How long a container's line waits for the local code to finish the line it is printing.
WAIT_S = 0.25


class LineGate:
    def __init__(self, inner: Any):
        self._inner = inner
        self._cond = threading.Condition()
        self._open = False  # the local code's last write did not end its line

    def write(self, text: str) -> int:
        with self._cond:
            written = self._inner.write(text)
            if text:
                self._open = not text.endswith("\n")
                if not self._open:
                    self._cond.notify_all()
            return written

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def write_whole(self, text: str) -> None:
        """Writes `text` (whole lines) once the local code's line is finished, and flushes."""
        with self._cond:
            self._cond.wait_for(lambda: not self._open, WAIT_S)
            self._inner.write(text)
            self._inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def install() -> Callable[[], None]:
    """Wraps ``sys.stdout`` and ``sys.stderr``; returns what undoes it (a stream replaced since by
    someone else is left alone)."""
    wrapped: List[Tuple[str, LineGate, Any]] = []
    for name in ("stdout", "stderr"):
        current = getattr(sys, name)
        if current is None or isinstance(current, LineGate):
            continue
        gate = LineGate(current)
        setattr(sys, name, gate)
        wrapped.append((name, gate, current))

    def restore() -> None:
        for name, gate, original in wrapped:
            if getattr(sys, name) is gate:
                setattr(sys, name, original)

    return restore


def write_lines(stream: Any, text: str) -> None:
    """Writes whole lines to `stream`, through its gate when it has one."""
    if isinstance(stream, LineGate):
        stream.write_whole(text)
    else:
        stream.write(text)
        stream.flush()
