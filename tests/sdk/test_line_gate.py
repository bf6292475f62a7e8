"""Container log lines never land inside a line the local code is printing (shoal._line_gate)."""

from __future__ import annotations

import io
import sys
import threading
import time

from shoal import _line_gate


def test_a_container_line_waits_for_the_local_line_to_end():
    out = io.StringIO()
    gate = _line_gate.LineGate(out)
    gate.write("result")  # print("result", 64) writes its parts one by one
    logger = threading.Thread(target=gate.write_whole, args=("[ct-1] squaring 8\n",))
    logger.start()
    time.sleep(0.05)
    assert out.getvalue() == "result"  # the container line is held back
    gate.write(" ")
    gate.write("64")
    gate.write("\n")
    logger.join(1)
    assert out.getvalue() == "result 64\n[ct-1] squaring 8\n"


def test_an_unfinished_local_line_holds_container_lines_only_briefly():
    out = io.StringIO()
    gate = _line_gate.LineGate(out)
    gate.write("progress 10%\r")
    started = time.monotonic()
    gate.write_whole("[ct-1] still here\n")
    waited = time.monotonic() - started
    assert _line_gate.WAIT_S * 0.8 <= waited < _line_gate.WAIT_S + 1.0
    assert out.getvalue() == "progress 10%\r[ct-1] still here\n"


def test_install_wraps_stdout_and_stderr_and_restore_undoes_it(capsys):
    before = sys.stdout, sys.stderr
    restore = _line_gate.install()
    try:
        assert isinstance(sys.stdout, _line_gate.LineGate) and isinstance(sys.stderr, _line_gate.LineGate)
        assert _line_gate.install()() is None  # already gated: nothing to wrap or undo
        print("local", 1)
        _line_gate.write_lines(sys.stdout, "[ct-2] remote\n")
        assert sys.stdout.encoding == before[0].encoding  # the rest goes to the wrapped stream
    finally:
        restore()
    assert (sys.stdout, sys.stderr) == before
    assert capsys.readouterr().out == "local 1\n[ct-2] remote\n"
