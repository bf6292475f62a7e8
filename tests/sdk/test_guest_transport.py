"""Inside a container the same Function / FunctionCall code talks over the guest channel
(docs/guest-protocol.md, "Nested calls"). A fake supervisor answers the CALL frames here."""

from __future__ import annotations

import threading
import time

import pytest

import shoal
from shoal import _definition, _transport
from shoal._guest import client as guest_client
from shoal._guest import protocol
from shoal.exception import ExecutionError, FunctionTimeoutError, InvalidError, NotFoundError

app = shoal.App("nested")


@app.function()
def square(x):
    return x * x


@app.function()
def boom():
    raise KeyError("missing")


@app.function()
def gen():
    yield 1


@app.cls()
class Greeter:
    @shoal.method()
    def hello(self, name):
        return f"hi {name}"


class FakeSupervisor:
    """Answers nested calls: functions of this module by name, run in-process."""

    STATUS = {"success": 0, "failure": 1, "timeout": 2, "cancelled": 3, "internal_error": 4}

    def __init__(self):
        self.calls = []
        self.spawned = {}
        self.functions = {"fu-square": square, "fu-boom": boom, "fu-gen": gen, "fu-Greeter": Greeter}
        self.forced = {}
        self.pending = set()

    def send(self, call: protocol.Call) -> None:
        self.calls.append(call.method)
        threading.Thread(target=self._answer, args=(call,), daemon=True).start()

    def _answer(self, call):
        try:
            body = self.handle(call.method, protocol.Reader(call.body))
            reply = protocol.Reply(call.request_id, 0, body, "")
        except LookupError as e:
            reply = protocol.Reply(call.request_id, 2, b"", str(e))
        except ValueError as e:
            reply = protocol.Reply(call.request_id, 1, b"", str(e))
        guest_client._deliver(reply)

    def run(self, function_id, args):
        if function_id in self.forced:
            return self.forced[function_id]
        method, a, k = _definition.decode_args(args)
        target = self.functions[function_id]
        fn = target.get_raw_f() if method is None else getattr(target._user_cls(), method)
        try:
            return 0, _definition.encode_result(fn(*a, **k)), ""
        except Exception as e:  # noqa: BLE001
            return 1, _definition.encode_exception(e), f"Traceback (in container):\n{type(e).__name__}: {e}\n"

    def handle(self, method, r):
        w = protocol.Writer()
        if method == "function.lookup":
            app_name, name = r.str("app"), r.str("name")
            if app_name != "nested-deployed" or f"fu-{name}" not in self.functions:
                raise LookupError(f"the app {app_name!r} has no function {name!r}")
            flags = (_transport.FLAG_IS_CLASS if name == "Greeter" else 0) | (
                _transport.FLAG_IS_GENERATOR if name == "gen" else 0)
            return w.str(f"fu-{name}").u32(flags).bytes(b"").getvalue()
        if method == "function.call":
            status, data, error = self.run(r.str("function_id"), r.bytes("args"))
            return w.u8(status).bytes(data).str(error).u32(1).getvalue()
        if method == "function.spawn":
            call_id = f"fc-{len(self.spawned)}"
            self.spawned[call_id] = (time.monotonic(), self.run(r.str("function_id"), r.bytes("args")))
            return w.str(call_id).getvalue()
        if method == "call.get":
            call_id, _timeout_ms = r.str("call_id"), r.u64("timeout_ms")
            started, record = self.spawned[call_id]
            if call_id in self.pending:
                return w.u8(0).getvalue()
            status, data, error = record
            return w.u8(1).u8(status).bytes(data).str(error).u32(1).getvalue()
        raise ValueError(f"unknown method {method!r}")


@pytest.fixture
def supervisor(monkeypatch):
    monkeypatch.setenv("SHOAL_GUEST_SOCKET", "/shoal/guest/guest.sock")
    monkeypatch.setenv("SHOAL_APP_NAME", "nested-deployed")
    fake = FakeSupervisor()
    guest_client._attach(fake.send)
    host_before = _transport.set_host(None)
    yield fake
    guest_client._attach(None)
    _transport.set_host(host_before)
    for handle in [square._handle, boom._handle, gen._handle, Greeter._handle]:
        handle.dehydrate()


def test_functions_of_the_containers_own_app_are_looked_up_in_shoal_app_name(supervisor):
    assert square.remote(4) == 16
    assert square.remote(5) == 25
    assert supervisor.calls.count("function.lookup") == 1, "the function id is cached"
    assert _transport.current().kind == "guest"


def test_nested_exceptions_reraise_as_their_own_type(supervisor):
    with pytest.raises(KeyError, match="missing") as info:
        boom.remote()
    assert "in container" in info.value.__cause__.text


def test_nested_output_statuses_map_onto_shoal_exceptions(supervisor):
    square._handle.resolve()
    supervisor.forced["fu-square"] = (2, b"", "square timed out after 2 s")
    with pytest.raises(FunctionTimeoutError, match="timed out after 2 s"):
        square.remote(1)
    supervisor.forced["fu-square"] = (4, b"", "function square exceeded its memory limit of 64 MiB")
    with pytest.raises(ExecutionError, match="memory limit"):
        square.remote(1)


def test_from_name_and_cls_from_name_work_inside_a_container(supervisor):
    assert shoal.Function.from_name("nested-deployed", "square").remote(3) == 9
    assert shoal.Cls.from_name("nested-deployed", "Greeter")().hello.remote("bo") == "hi bo"
    assert Greeter().hello.remote("al") == "hi al"
    with pytest.raises(NotFoundError, match="no function 'nope'"):
        shoal.Function.from_name("nested-deployed", "nope").remote()


def test_map_inside_a_container_keeps_input_order(supervisor):
    assert list(square.map(range(40))) == [x * x for x in range(40)]
    assert list(square.starmap([(2,), (3,)])) == [4, 9]
    failures = list(boom.starmap([(), ()], return_exceptions=True))
    assert [type(e) for e in failures] == [KeyError, KeyError]


def test_spawn_and_get_inside_a_container(supervisor):
    call = square.spawn(6)
    assert call.object_id == "fc-0"
    assert shoal.FunctionCall.from_id("fc-0").get() == 36
    supervisor.pending.add("fc-0")
    with pytest.raises(TimeoutError):
        call.get(timeout=0)


def test_cancel_inside_a_container_says_the_server_lacks_it(supervisor):
    with pytest.raises(InvalidError, match="not supported by this server yet"):
        square.spawn(1).cancel()


def test_generators_and_app_run_are_refused_inside_a_container_with_a_reason(supervisor):
    with pytest.raises(InvalidError, match="inside a container"):
        gen.remote_gen()
    with pytest.raises(InvalidError, match="inside a container"):
        with app.run():
            pass


def test_a_subprocess_of_the_function_gets_a_clear_error(monkeypatch):
    monkeypatch.setenv("SHOAL_GUEST_SOCKET", "/shoal/guest/guest.sock")
    guest_client._attach(None)
    with pytest.raises(InvalidError, match="not the container's guest runtime"):
        shoal.Function.from_name("x", "y").remote()
