"""The guest runtime (`python3 -m shoal._guest`) driven by a fake supervisor over a real Unix socket;
the user module is tests/guest_py/guestmod_source.py."""

from __future__ import annotations

import pickle
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from shoal import _definition as d
from shoal import exception
from shoal._guest import protocol as p
from shoal._guest import runtime

from guest_harness import Guest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory):
    code = tmp_path_factory.mktemp("code")
    shutil.copy(HERE / "guestmod_source.py", code / "guestmod.py")
    (code / "broken.py").write_text("import os\nraise ImportError('no such thing: ' + os.sep)\n")
    sys.path.insert(0, str(code))
    yield code
    sys.path.remove(str(code))
    sys.modules.pop("guestmod", None)


@pytest.fixture
def mod(code_dir):
    import guestmod

    return guestmod


@pytest.fixture
def guest(tmp_path, code_dir):
    guests = []

    def start(env=None):
        home = tmp_path / f"guest{len(guests)}"
        home.mkdir()
        g = Guest(home, code_dir, env={"GUEST_MARKER": str(tmp_path / "marker"), **(env or {})})
        guests.append(g)
        return g

    yield start
    for g in guests:
        g.close()


def fn_def(fn):
    return d.make_function_definition(fn)


def args(*a, method=None, **kw):
    return d.encode_args(method, a, kw)


def value(out):
    return d.decode_result(out.data)


# --- functions ------------------------------------------------------------------------------------


def test_hello_reports_protocol_python_and_cloudpickle_versions(guest, mod):
    g = guest()
    hello = g.expect(p.Hello)
    assert hello.protocol == 1
    assert hello.python_version == ".".join(map(str, sys.version_info[:3]))
    assert hello.cloudpickle_version == "2.2.0"


def test_a_function_input_returns_its_value(guest, mod):
    g = guest()
    assert g.start(fn_def(mod.square), max_inputs=1) == p.Ready(1)
    (out,) = g.run_one(1, args(7))
    assert (out.id, out.status, value(out), out.error) == (1, p.SUCCESS, 49, "")


def test_an_exception_comes_back_pickled_with_the_container_traceback(guest, mod):
    g = guest()
    g.start(fn_def(mod.boom))
    (out,) = g.run_one(5, args(3))
    assert out.status == p.FAILURE
    exc = value(out)
    assert isinstance(exc, ValueError) and str(exc) == "boom 3"
    assert out.error.startswith("Traceback (most recent call last, in container ct-test):\n")
    assert 'guestmod.py", line' in out.error and "in boom" in out.error
    assert "shoal/_guest" not in out.error  # the runtime's own frames are cut
    assert out.error.rstrip().endswith("ValueError: boom 3")


def test_an_exception_that_does_not_unpickle_still_carries_its_traceback(guest, mod):
    g = guest()
    g.start(fn_def(mod.boom_unpicklable))
    (out,) = g.run_one(1, args())
    assert (out.status, out.data) == (p.FAILURE, b"")
    assert "Unpicklable: 1/2" in out.error


def test_a_return_value_that_cannot_be_pickled_is_a_serialization_error(guest, mod):
    g = guest()
    g.start(fn_def(mod.lock))
    (out,) = g.run_one(1, args())
    assert out.status == p.FAILURE
    assert isinstance(value(out), exception.SerializationError)
    assert "the return value of lock cannot be pickled" in out.error


def test_arguments_that_do_not_unpickle_fail_only_that_input(guest, mod):
    g = guest()
    g.start(fn_def(mod.square))
    (bad,) = g.run_one(1, b"not a pickle")
    assert bad.status == p.FAILURE and "DeserializationError" in bad.error
    (good,) = g.run_one(2, args(3))
    assert value(good) == 9


def test_a_generator_streams_items_then_done(guest, mod):
    g = guest()
    g.start(fn_def(mod.count))
    outs = g.run_one(1, args(4))
    assert [o.status for o in outs] == [p.ITEM] * 4 + [p.DONE]
    assert [value(o) for o in outs[:4]] == [0, 1, 2, 3]
    assert outs[-1].data == b""


def test_a_generator_that_raises_ends_with_a_failure_after_its_items(guest, mod):
    g = guest()
    g.start(fn_def(mod.count_then_fail))
    outs = g.run_one(1, args(2))
    assert [o.status for o in outs] == [p.ITEM, p.ITEM, p.FAILURE]
    assert "RuntimeError: generator failed" in outs[-1].error


def test_async_functions_and_async_generators_run_on_the_event_loop(guest, mod):
    g = guest()
    g.start(fn_def(mod.asquare))
    (out,) = g.run_one(1, args(5))
    assert value(out) == 25

    g2 = guest()
    g2.start(fn_def(mod.acount))
    outs = g2.run_one(1, args(3))
    assert [(o.status, value(o) if o.data else None) for o in outs] == [
        (p.ITEM, 0), (p.ITEM, 1), (p.ITEM, 2), (p.DONE, None)]


def test_a_sync_function_returning_a_coroutine_is_awaited(guest, mod):
    g = guest()
    g.start(fn_def(mod.returns_coroutine))
    (out,) = g.run_one(1, args(6))
    assert value(out) == 36


def test_max_inputs_sync_inputs_run_at_once_on_threads(guest, mod):
    g = guest()
    assert g.start(fn_def(mod.meet), max_inputs=3) == p.Ready(3)
    g.send(p.Inputs([p.Input(i, args(i)) for i in (1, 2, 3)]))
    got = g.collect([1, 2, 3])
    assert {i: value(o[0]) for i, o in got.items()} == {1: 1, 2: 2, 3: 3}


def test_a_max_inputs_of_zero_runs_one_at_a_time(guest, mod):
    g = guest()
    assert g.start(fn_def(mod.square), max_inputs=0) == p.Ready(1)


def test_many_inputs_come_back_once_each(guest, mod):
    g = guest()
    g.start(fn_def(mod.square), max_inputs=8)
    ids = list(range(1, 501))
    g.send(p.Inputs([p.Input(i, args(i)) for i in ids]))
    got = g.collect(ids)
    assert all(len(o) == 1 and value(o[0]) == i * i for i, o in got.items())


# --- cancellation ---------------------------------------------------------------------------------


def test_cancelling_an_async_input_cancels_its_task(guest, mod):
    g = guest()
    g.start(fn_def(mod.asleepy), max_inputs=2)
    g.send(p.Inputs([p.Input(1, args(30)), p.Input(2, args(0))]))
    assert [o.status for o in g.collect([2])[2]] == [p.SUCCESS]
    started = time.monotonic()
    g.send(p.Cancel(1))
    assert [o.status for o in g.collect([1])[1]] == [p.CANCELLED]
    assert time.monotonic() - started < 5


def test_a_cancelled_sync_input_reports_cancelled_instead_of_its_result(guest, mod):
    g = guest()
    g.start(fn_def(mod.sleepy))
    g.send(p.Inputs([p.Input(1, args(0.5))]))
    time.sleep(0.1)
    g.send(p.Cancel(1))
    g.send(p.Cancel(1))  # twice: still one output
    assert [(o.status, o.data) for o in g.collect([1])[1]] == [(p.CANCELLED, b"")]


def test_a_cancelled_queued_sync_input_is_dropped_before_it_starts(guest, mod):
    g = guest()
    g.start(fn_def(mod.sleepy), max_inputs=1)
    g.send(p.Inputs([p.Input(1, args(0.5)), p.Input(2, args(0.5))]))
    g.send(p.Cancel(2))
    got = g.collect([2])
    assert [o.status for o in got[2]] == [p.CANCELLED]
    assert [o.status for o in g.collect([1])[1]] == [p.SUCCESS]


def test_a_cancelled_generator_stops_between_items(guest, mod):
    g = guest()
    g.start(fn_def(mod.slow_count))
    g.send(p.Inputs([p.Input(1, args(1000))]))
    first = g.recv()
    assert isinstance(first, p.Outputs) and first.items[0].status == p.ITEM
    g.send(p.Cancel(1))
    outs = g.collect([1])[1]
    assert outs[-1].status == p.CANCELLED
    assert len(outs) < 100


def test_cancel_for_an_unknown_input_is_ignored(guest, mod):
    g = guest()
    g.start(fn_def(mod.square))
    g.send(p.Cancel(12345))
    assert value(g.run_one(1, args(2))[0]) == 4


# --- classes --------------------------------------------------------------------------------------


def cls_def(cls, *a, **kw):
    return d.make_class_definition(cls, constructor_args=a, constructor_kwargs=kw)


def test_a_class_runs_enter_hooks_once_and_dispatches_methods(guest, mod, tmp_path):
    g = guest()
    g.start(cls_def(mod.Model, k=3))
    assert value(g.run_one(1, args(5, method="mul"))[0]) == 15
    assert value(g.run_one(2, args(method="state"))[0]) == (300, True)
    assert value(g.run_one(3, args(4, method="amul"))[0]) == 12
    assert [value(o) for o in g.run_one(4, args(2, method="gen"))[:-1]] == [0, 1]
    assert g.run_one(1, args(1, method="mul"))[0].status == p.SUCCESS  # ids may repeat once done


def test_a_parameter_takes_its_default_when_not_given(guest, mod):
    g = guest()
    g.start(cls_def(mod.Model))
    assert value(g.run_one(1, args(5, method="mul"))[0]) == 10


def test_only_shoal_methods_can_be_called(guest, mod):
    g = guest()
    g.start(cls_def(mod.Model))
    (out,) = g.run_one(1, args(method="hidden"))
    assert out.status == p.FAILURE
    assert "Model.hidden is not a @shoal.method() of Model" in out.error
    (out,) = g.run_one(2, args())
    assert "an input must name one of its methods (amul, gen, mul, nested, slow, state)" in out.error


def test_shutdown_runs_exit_hooks_then_exits_0(guest, mod, tmp_path):
    g = guest()
    g.start(cls_def(mod.Model))
    g.send(p.Shutdown())
    assert g.wait() == 0
    assert (tmp_path / "marker").read_text() == "exit ran\n__exit__ ran\n"


def test_shutdown_lets_running_inputs_finish_and_drops_later_ones(guest, mod, tmp_path):
    g = guest()
    g.start(cls_def(mod.Model), max_inputs=2)
    g.send(p.Inputs([p.Input(1, args(method="slow", seconds=0.3))]))
    g.send(p.Shutdown())
    g.send(p.Inputs([p.Input(2, args(3, method="mul"))]))  # after SHUTDOWN: never runs
    got = g.collect([1])
    assert [(o.status, value(o)) for o in got[1]] == [(p.SUCCESS, "slow done")]
    assert g.recv() is None  # nothing for input 2; the guest exits
    assert g.wait() == 0
    assert (tmp_path / "marker").read_text() == "exit ran\n__exit__ ran\n"


def test_a_legacy_class_with_init_and_enter_works(guest, mod):
    g = guest()
    g.start(cls_def(mod.Legacy, 10))
    assert value(g.run_one(1, args(method="get"))[0]) == (10, True)


def test_an_enter_hook_that_fails_is_fatal(guest, mod):
    g = guest()
    g.expect(p.Hello)
    g.send(p.Init(cls_def(mod.FailingEnter), 1))
    fatal = g.expect(p.Fatal)
    assert fatal.error.startswith("Traceback (most recent call last, in container ct-test):")
    assert "OSError: model weights missing" in fatal.error
    assert "in load" in fatal.error
    assert g.wait() == 1


def test_a_module_that_fails_to_import_is_fatal_with_its_traceback(guest):
    def f():
        pass

    f.__module__, f.__qualname__ = "broken", "f"
    g = guest()
    g.expect(p.Hello)
    g.send(p.Init(fn_def(f), 1))
    fatal = g.expect(p.Fatal)
    assert 'broken.py", line 2, in <module>' in fatal.error
    assert "ImportError: no such thing: /" in fatal.error
    assert "importlib" not in fatal.error
    assert g.wait() == 1


# --- nested calls ---------------------------------------------------------------------------------


def echo(call: p.Call) -> p.Reply:
    if call.method == "test.echo":
        return p.Reply(call.request_id, 0, b"echo:" + call.body, "")
    return p.Reply(call.request_id, p.ERRC_INVALID_ARGUMENT, b"", f"unknown method {call.method}")


def test_a_nested_call_blocks_the_input_until_the_reply(guest, mod):
    g = guest()
    g.start(fn_def(mod.nested))
    (out,) = g.run_one(1, args(3), on_call=echo)
    assert value(out) == (3, b"echo:ping")


def test_nested_calls_from_async_code_and_from_methods(guest, mod):
    g = guest()
    g.start(fn_def(mod.anested), max_inputs=4)
    g.send(p.Inputs([p.Input(i, args(i)) for i in range(1, 5)]))
    got = g.collect(range(1, 5), on_call=echo)
    assert {i: value(o[0]) for i, o in got.items()} == {i: (i, b"echo:ping") for i in range(1, 5)}

    g2 = guest()
    g2.start(cls_def(mod.Model))
    assert value(g2.run_one(1, args(method="nested"), on_call=echo)[0]) == b"echo:from a method"


def test_an_error_reply_raises_the_matching_shoal_exception(guest, mod):
    g = guest()
    g.start(fn_def(mod.nested_fails))
    (out,) = g.run_one(1, args(), on_call=echo)
    assert out.status == p.FAILURE
    exc = value(out)
    assert isinstance(exc, exception.InvalidError)
    assert "unknown method test.missing" in str(exc)


# --- connection -----------------------------------------------------------------------------------


def test_a_lost_connection_exits_70(guest, mod):
    g = guest()
    g.start(fn_def(mod.sleepy))
    g.conn.close()
    assert g.wait() == 70


def test_a_frame_only_the_guest_sends_is_a_protocol_violation(guest, mod):
    g = guest()
    g.start(fn_def(mod.square))
    g.send(p.Ready(1))
    fatal = g.expect(p.Fatal)
    assert fatal.error == "guest protocol violation: the supervisor sent READY, a frame only the guest sends"
    assert g.wait() == 1


def test_shutdown_before_init_exits_0(guest):
    g = guest()
    g.expect(p.Hello)
    g.send(p.Shutdown())
    assert g.wait() == 0


def test_without_a_socket_the_guest_exits_2(tmp_path):
    import subprocess

    from guest_harness import PYTHON, REPO

    r = subprocess.run([PYTHON, "-m", "shoal._guest"], env={"PYTHONPATH": str(REPO / "python")},
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2
    assert "SHOAL_GUEST_SOCKET is not set" in r.stderr


# --- batching (in-process, deterministic) ---------------------------------------------------------


class _BlockingConnection:
    """Records frames; the first send blocks until released."""

    def __init__(self):
        self.frames = []
        self.release = threading.Event()
        self.first_send_started = threading.Event()

    def send(self, frame):
        if not self.frames:
            self.frames.append(frame)
            self.first_send_started.set()
            assert self.release.wait(10)
        else:
            self.frames.append(frame)

    def close(self):
        pass


def test_outputs_finished_while_a_frame_is_written_go_out_together():
    conn = _BlockingConnection()
    rt = runtime.GuestRuntime(conn, {})
    first = threading.Thread(target=rt._emit, args=(p.Output(1, p.SUCCESS, b"a"),))
    first.start()
    assert conn.first_send_started.wait(10)
    rt._emit(p.Output(2, p.SUCCESS, b"b"))  # returns at once: the first thread writes it
    rt._emit(p.Output(3, p.FAILURE, b"", "tb"))
    conn.release.set()
    first.join(10)
    assert [[o.id for o in f.items] for f in conn.frames] == [[1], [2, 3]]


def test_async_inputs_finishing_in_one_loop_iteration_share_a_frame():
    conn = _BlockingConnection()
    conn.release.set()
    rt = runtime.GuestRuntime(conn, {})
    loop = rt._event_loop()
    done = threading.Event()

    def finish_three():  # three tasks completing in the same iteration
        for i in (1, 2, 3):
            rt._emit(p.Output(i, p.SUCCESS, b""))
        loop.call_soon(done.set)

    loop.call_soon_threadsafe(finish_three)
    assert done.wait(10)
    assert [[o.id for o in f.items] for f in conn.frames] == [[1, 2, 3]]


def test_a_batch_larger_than_the_frame_cap_is_split(monkeypatch):
    conn = _BlockingConnection()
    conn.release.set()
    rt = runtime.GuestRuntime(conn, {})
    monkeypatch.setattr(p, "MAX_PAYLOAD_BYTES", 4 + 2 * (17 + 100))
    rt._send_outputs([p.Output(i, p.SUCCESS, b"x" * 100) for i in range(5)])
    assert [[o.id for o in f.items] for f in conn.frames] == [[0, 1], [2, 3], [4]]
    assert all(len(p.encode(f)) - 5 <= p.MAX_PAYLOAD_BYTES for f in conn.frames)


def test_format_exception_cuts_runtime_frames_and_names_the_container():
    def user():
        raise KeyError("k")

    try:
        user()
    except KeyError as e:
        text = runtime.format_exception(e, "ct-9")
    assert text.startswith("Traceback (most recent call last, in container ct-9):\n")
    assert "in user" in text and text.rstrip().endswith("KeyError: 'k'")
    assert pickle.loads(pickle.dumps(text)) == text
