"""Calling functions through the fake transport: remote, map ordering and return_exceptions,
spawn / from_id / get(timeout=0), remote_gen, aio twins, classes, and how remote exceptions come
back."""

from __future__ import annotations

import asyncio
import time
import traceback

import pytest

import shoal
from shoal.exception import (
    ExecutionError,
    FunctionTimeoutError,
    InputCancellation,
    InvalidError,
    NotFoundError,
    RemoteError,
    RemoteTraceback,
)

app = shoal.App("calls")


@app.function()
def square(x):
    return x * x


@app.function()
def slow_square(x, delay=0.0):
    time.sleep(delay)
    return x * x


@app.function()
def add(a, b, scale=1):
    return (a + b) * scale


@app.function()
def fails_on_odd(x):
    if x % 2:
        raise ValueError(f"odd input {x}")
    return x


@app.function()
def countdown(n):
    for i in range(n, 0, -1):
        yield i


@app.function(timeout=0.2)
def sleeper(s):
    time.sleep(s)
    return s


@app.function()
def crashes():
    return "never"


class LocalOnlyError(Exception):
    pass


@app.function()
def raises_unpicklable():
    import threading

    error = RuntimeError("from an exception that cannot be pickled")
    error.lock = threading.Lock()  # pickling fails: only the traceback text travels
    raise error


@app.cls()
class Counter:
    base: int = shoal.parameter(default=0)

    @shoal.enter()
    def start(self):
        self.entered = getattr(self, "entered", 0) + 1

    @shoal.method()
    def bump(self, n):
        return self.base + n

    @shoal.method()
    def entered_times(self):
        return self.entered

    @shoal.method()
    def stream(self, n):
        yield from range(n)


# Made before the app starts: registered with it (docs/sdk.md, class instances).
counter_100 = Counter(base=100)


@pytest.fixture
def running(fake):
    with app.run(show_progress=False):
        yield fake


def test_remote_returns_the_value_computed_by_the_function(running):
    assert square.remote(7) == 49
    assert add.remote(1, 2, scale=10) == 30


def test_local_and_direct_calls_run_in_this_process_without_the_server(fake):
    assert square.local(3) == 9
    assert square(4) == 16
    assert fake.remote_calls == 0


def test_calling_a_function_of_an_app_that_is_not_running_explains_what_to_do(fake):
    with pytest.raises(InvalidError, match="inside `with app.run\\(\\):`"):
        square.remote(2)


def test_map_yields_results_in_input_order_even_when_they_finish_out_of_order(running):
    xs = [0, 1, 2, 3, 4, 5]
    delays = [0.3, 0.0, 0.2, 0.0, 0.1, 0.0]
    assert list(slow_square.map(xs, delays)) == [x * x for x in xs]


def test_map_with_order_outputs_false_yields_results_as_they_finish(running):
    results = list(slow_square.map([1, 2, 3], [0.4, 0.0, 0.2], order_outputs=False))
    assert sorted(results) == [1, 4, 9]
    assert results[0] == 4


def test_map_raises_the_first_failure_by_default(running):
    with pytest.raises(ValueError, match="odd input"):
        list(fails_on_odd.map(range(6)))


def test_map_with_return_exceptions_yields_exception_objects_in_place(running):
    results = list(fails_on_odd.map(range(5), return_exceptions=True))
    assert results[0] == 0 and results[2] == 2 and results[4] == 4
    assert isinstance(results[1], ValueError) and "odd input 1" in str(results[1])
    assert isinstance(results[3], ValueError)


def test_map_zips_several_iterators_and_passes_kwargs(running):
    assert list(add.map([1, 2, 3], [10, 20, 30], kwargs={"scale": 2})) == [22, 44, 66]


def test_map_of_many_inputs_keeps_every_result(running):
    assert list(square.map(range(1000))) == [x * x for x in range(1000)]


def test_map_of_no_inputs_is_empty(running):
    assert list(square.map([])) == []


def test_starmap_unpacks_each_input(running):
    assert list(add.starmap([(1, 2), (3, 4)], kwargs={"scale": 3})) == [9, 21]


def test_for_each_waits_for_every_input_and_returns_none(running):
    assert slow_square.for_each([1, 2], [0.05, 0.05]) is None
    with pytest.raises(ValueError):
        fails_on_odd.for_each([1])
    assert fails_on_odd.for_each([1, 3], ignore_exceptions=True) is None


def test_a_remote_exception_reraises_as_its_own_type_with_the_remote_traceback_as_cause(running):
    with pytest.raises(ValueError, match="odd input 3") as info:
        fails_on_odd.remote(3)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in container" in cause.text and "fails_on_odd" in cause.text
    printed = "".join(traceback.format_exception(info.value))
    assert "odd input 3" in printed and "The above exception was the direct cause" in printed


def test_an_exception_that_cannot_be_pickled_becomes_remote_error_with_its_text(running):
    with pytest.raises(RemoteError, match="from an exception that cannot be pickled") as info:
        raises_unpicklable.remote()
    assert "Traceback" in str(info.value) and "raises_unpicklable" in str(info.value)


def test_an_exception_whose_type_does_not_exist_here_becomes_remote_error(tmp_path, monkeypatch):
    import sys

    from shoal import _definition, _functions, _transport

    (tmp_path / "remote_only_mod.py").write_text("class Special(Exception):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import remote_only_mod

    data = _definition.encode_exception(remote_only_mod.Special("boom"))
    del sys.modules["remote_only_mod"]
    (tmp_path / "remote_only_mod.py").unlink()
    output = _transport.Output(0, "failure", data, "Traceback (...)\nremote_only_mod.Special: boom\n")
    error = _functions.output_error(output, "f")
    assert isinstance(error, RemoteError) and "remote_only_mod.Special: boom" in str(error)


def test_a_timed_out_input_raises_function_timeout_error(running):
    with pytest.raises(FunctionTimeoutError, match="sleeper timed out"):
        sleeper.remote(2)
    assert isinstance(FunctionTimeoutError("x"), TimeoutError)


def test_an_internal_error_raises_execution_error_with_the_servers_sentence(running):
    running.internal_errors["crashes"] = "function crashes exceeded its memory limit of 64 MiB"
    with pytest.raises(ExecutionError, match="crashes exceeded its memory limit of 64 MiB"):
        crashes.remote()


def test_spawn_returns_a_function_call_whose_get_returns_the_result(running):
    call = slow_square.spawn(6, delay=0.05)
    assert isinstance(call, shoal.FunctionCall)
    assert call.object_id.startswith("fc-")
    assert call.get() == 36


def test_from_id_finds_a_spawned_call(running):
    call_id = square.spawn(5).object_id
    assert shoal.FunctionCall.from_id(call_id).get(timeout=5) == 25


def test_get_with_timeout_zero_polls_once_and_raises_timeout_error(running):
    call = slow_square.spawn(2, delay=1.0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        call.get(timeout=0)
    assert time.monotonic() - started < 0.5
    with pytest.raises(shoal.exception.TimeoutError, match="within 0.1 s"):
        call.get(timeout=0.1)
    assert call.get() == 4  # the call kept running


def test_a_spawned_failure_reraises_from_get(running):
    with pytest.raises(ValueError, match="odd input 1"):
        fails_on_odd.spawn(1).get()


def test_cancel_makes_get_raise_input_cancellation(running):
    call = slow_square.spawn(3, delay=2.0)
    call.cancel()
    with pytest.raises(InputCancellation):
        call.get()


def test_gather_returns_results_in_call_order(running):
    calls = [slow_square.spawn(x, delay=0.1 * (3 - x)) for x in range(3)]
    assert shoal.FunctionCall.gather(*calls) == [0, 1, 4]


def test_spawn_map_returns_one_call_per_input_in_order(running):
    calls = square.spawn_map(range(5))
    assert [c.get() for c in calls] == [0, 1, 4, 9, 16]


def test_remote_gen_yields_each_item_of_a_generator_function(running):
    assert list(countdown.remote_gen(3)) == [3, 2, 1]
    with pytest.raises(InvalidError, match="remote_gen"):
        countdown.remote(3)
    with pytest.raises(InvalidError, match="not a generator"):
        square.remote_gen(3)


def test_aio_twins_run_without_blocking_the_event_loop(running):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        value = await slow_square.remote.aio(3, delay=0.3)
        mapped = [x async for x in square.map.aio(range(4))]

        async def numbers():
            for i in range(3):
                yield i

        from_async = [x async for x in square.map.aio(numbers())]
        star = [x async for x in add.starmap.aio([(1, 1)])]
        gen = [x async for x in countdown.remote_gen.aio(2)]
        call = await square.spawn.aio(9)
        got = await call.get.aio()
        gathered = await shoal.FunctionCall.gather.aio(square.spawn(2), square.spawn(3))
        task.cancel()
        return value, mapped, from_async, star, gen, got, gathered, ticks

    value, mapped, from_async, star, gen, got, gathered, ticks = asyncio.run(main())
    assert value == 9 and mapped == [0, 1, 4, 9] and from_async == [0, 1, 4]
    assert star == [2] and gen == [2, 1] and got == 81 and gathered == [4, 9]
    assert ticks >= 10, "the event loop was blocked during remote.aio"


def test_leaving_a_map_early_cancels_the_rest(running):
    results = slow_square.map(range(50), [0.05] * 50)
    assert next(results) == 0
    results.close()
    call = next(c for c in running.calls.values() if hasattr(c, "push"))
    assert call.cancelled.is_set()


def test_class_methods_run_on_one_instance_whose_enter_hook_ran_once(running):
    counter = Counter()
    assert counter.bump.remote(5) == 5
    assert list(counter.bump.map([1, 2, 3])) == [1, 2, 3]
    assert counter.entered_times.remote() == 1
    assert list(counter.stream.remote_gen(3)) == [0, 1, 2]
    fn = next(f for f in running.functions.values() if f.name == "Counter")
    assert fn.enter_count == 1


def test_an_instance_made_before_the_app_started_is_its_own_registered_function(running):
    assert counter_100.bump.remote(1) == 101
    names = sorted(f.name for f in running.functions.values() if f.name.startswith("Counter"))
    assert names[0] == "Counter" and names[1].startswith("Counter-") and len(names) == 2


def test_an_instance_with_new_arguments_made_while_running_is_added_to_the_app(running, fake):
    assert Counter(base=7).bump.remote(1) == 8
    assert Counter(base=7).bump.remote(2) == 9  # the same derived function, not a second one
    assert [d["base"] for d in fake.derived] == ["Counter"]


def test_constructor_arguments_are_checked_locally(fake):
    with pytest.raises(TypeError, match="unexpected parameter"):
        Counter(nope=1)
    with pytest.raises(TypeError, match="keyword arguments only"):
        Counter(1)


def test_class_method_local_runs_enter_hooks_on_a_local_instance(fake):
    obj = Counter(base=2)
    assert obj.bump.local(3) == 5
    assert obj.entered_times.local() == 1
    assert obj.base == 2


def test_from_name_looks_a_deployed_function_up_lazily_and_calls_it(fake):
    deployed = shoal.App("lookup-target")

    @deployed.function(serialized=True)
    def double(x):
        return 2 * x

    lazy = shoal.Function.from_name("lookup-target", "double")
    deployed.deploy()
    assert lazy.remote(21) == 42
    assert lazy.object_id.startswith("fu-")
    assert list(shoal.Function.from_name("lookup-target", "double").map([1, 2])) == [2, 4]
    with pytest.warns(DeprecationWarning, match="from_name"):
        eager = shoal.Function.lookup("lookup-target", "double")
    assert eager.object_id == lazy.object_id
    with pytest.raises(NotFoundError, match="no function 'nope'"):
        shoal.Function.from_name("lookup-target", "nope").remote(1)


def test_cls_from_name_calls_methods_of_a_deployed_class(fake):
    deployed = shoal.App("cls-target")

    @deployed.cls(serialized=True)
    class Greeter:
        @shoal.method()
        def hello(self, name):
            return f"hello {name}"

    deployed.deploy()
    greeter = shoal.Cls.from_name("cls-target", "Greeter")
    assert greeter().hello.remote("ada") == "hello ada"
    with pytest.raises(AttributeError, match="no @shoal.method\\(\\) named 'bye'"):
        greeter().bye


def test_leaving_app_run_stops_the_ephemeral_app_and_unbinds_its_functions(fake):
    with app.run(show_progress=False):
        assert square.remote(2) == 4
        created = fake.created[-1]["app"]
        assert created.mode == "ephemeral"
    assert created.state == "stopped" and created.closed
    with pytest.raises(InvalidError, match="not running"):
        square.remote(2)


def test_a_detached_run_is_not_stopped_at_the_end(fake):
    with app.run(detach=True, show_progress=False):
        pass
    created = fake.created[-1]["app"]
    assert created.mode == "detached" and created.state == "running"


def test_with_options_on_a_deployed_function_adds_a_variant_to_it(fake):
    deployed = shoal.App("options-target")

    @deployed.function(serialized=True)
    def one():
        return 1

    deployed.deploy()
    quick = shoal.Function.from_name("options-target", "one").with_options(timeout=5)
    assert quick.remote() == 1
    assert fake.derived[-1]["overrides"]["timeout_ms"] == 5000


def test_a_with_options_variant_made_before_the_start_runs_with_its_options(fake):
    variant_app = shoal.App("variant")

    @variant_app.function(serialized=True, timeout=60)
    def nap(s):
        time.sleep(s)
        return s

    quick = nap.with_options(timeout=0.2)
    with variant_app.run(show_progress=False):
        assert nap.remote(0.3) == 0.3
        with pytest.raises(FunctionTimeoutError):
            quick.remote(0.5)


def test_get_refuses_a_negative_timeout(fake):
    with pytest.raises(InvalidError, match="timeout=-1"):
        shoal.FunctionCall("fc-1").get(timeout=-1)


def test_functions_and_calls_travel_by_name_when_pickled(running):
    from shoal import _definition

    call = square.spawn(3)
    again = _definition.decode_result(_definition.encode_result(call))
    assert again.object_id == call.object_id and again.get() == 9
    copy = _definition.decode_result(_definition.encode_result(square))
    assert copy.remote(5) == 25
    method = _definition.decode_result(_definition.encode_result(Counter().bump))
    assert method.remote(1) == 1
