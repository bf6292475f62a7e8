"""Functions end to end (issue 3): the real shoald, real crun containers, the real `shoal` CLI and
SDK. Every test writes its app into tmp_path and runs it with `shoal run` / `shoal deploy` or a
plain `python3 script.py` pointed at the daemon through SHOAL_SERVER / SHOAL_TOKEN.

All tests share one daemon and state dir (`module_shoald`), so the default image is built once;
the first test to start a container pays for that build, hence the long timeouts. App names are
distinct per test because the daemon is shared.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from conftest import LONG_S, PYTHON, PYTHON_DIR, Result, last_json, ok, wait_until, write



@pytest.fixture(scope="module")
def shoald(module_shoald):
    return module_shoald


def containers_of(shoal, app_name: str) -> list:
    listed = shoal("container list --json", timeout_s=60).json()
    return [c for c in listed if c["app_name"] == app_name and c["state"] not in ("stopped", "crashed")]


def test_hello_world_runs_in_a_container_and_its_output_reaches_the_terminal(shoal, tmp_path):
    app = write(tmp_path, "hello.py", """
        import os
        import shoal

        app = shoal.App("e2e-hello")

        @app.function()
        def square(x: int) -> int:
            print(f"squaring {x} in {os.environ['SHOAL_CONTAINER_ID']}")
            return x * x

        @app.local_entrypoint()
        def main(x: int = 7):
            print("result", square.remote(x))
    """)
    result = ok(shoal(f"run {app} --x 8"))
    assert "result 64" in result.stdout
    assert "✓ Initialized app e2e-hello" in result.stderr
    assert "Shipped 1 file" in result.stderr and "hello.py" in result.stderr
    log_lines = [line for line in result.stdout.splitlines() if "squaring 8 in" in line]
    assert log_lines, f"the container's print did not reach the terminal:\n{result.stdout}"
    prefix, _, rest = log_lines[0].partition("] ")
    assert prefix.startswith("[ct-") and rest.endswith(prefix[1:]), log_lines[0]
    assert "✓ App completed." in result.stderr


def test_lines_printed_while_the_app_stops_reach_the_terminal_before_it_completes(shoal, tmp_path):
    # The end of a run's output is marked by shoald, not guessed from silence: an exit hook that
    # prints a second after the entrypoint returned, while `shoal run` stops the app, is shown,
    # and so is every line of a burst printed just before the result.
    app = write(tmp_path, "late_lines.py", """
        import sys
        import time
        import shoal

        app = shoal.App("e2e-late-lines")

        @app.cls()
        class Talker:
            @shoal.method()
            def talk(self, n: int) -> int:
                for i in range(n):
                    print(f"burst {i}")
                return n

            @shoal.exit()
            def goodbye(self):
                time.sleep(1.0)
                print("goodbye from the exit hook")
                print("last words on stderr", file=sys.stderr)

        @app.local_entrypoint()
        def main():
            print("result", Talker().talk.remote(300))
    """)
    result = ok(shoal(f"run {app}"))
    assert "result 300" in result.stdout
    shown = {line.partition("] ")[2] for line in result.stdout.splitlines() if line.startswith("[ct-")}
    missing = [i for i in range(300) if f"burst {i}" not in shown]
    assert not missing, f"lines of the burst did not reach the terminal: {missing[:10]}"
    assert "goodbye from the exit hook" in shown, result.stdout
    err = result.stderr
    assert "] last words on stderr" in err, err
    assert err.index("] last words on stderr") < err.index("✓ App completed."), err
    assert "did not finish their output" not in err


def test_map_and_starmap_keep_input_order_and_return_exceptions(shoal, tmp_path):
    app = write(tmp_path, "mapping.py", """
        import json
        import random
        import time
        import shoal

        app = shoal.App("e2e-map")

        @app.function()
        def slow_square(x):
            time.sleep(random.random() * 0.2)
            return x * x

        @app.function()
        def add(a, b):
            return a + b

        @app.function()
        def odd_fails(x):
            if x % 2:
                raise ValueError(f"odd {x}")
            return x

        @app.function()
        def count(n):
            yield from range(n)

        @app.local_entrypoint()
        def main():
            squares = list(slow_square.map(range(30)))
            sums = list(add.starmap([(1, 2), (3, 4), (5, 6)]))
            mixed = [repr(r) for r in odd_fails.map(range(6), return_exceptions=True)]
            try:
                list(odd_fails.map(range(6)))
                raised = None
            except ValueError as e:
                raised = str(e)
            unordered = sorted(slow_square.map(range(10), order_outputs=False))
            print(json.dumps({"squares": squares, "sums": sums, "mixed": mixed, "raised": raised,
                              "unordered": unordered, "gen": list(count.remote_gen(4))}))
    """)
    out = last_json(shoal(f"run {app}"))
    assert out["squares"] == [x * x for x in range(30)]
    assert out["sums"] == [3, 7, 11]
    assert out["mixed"] == ["0", "ValueError('odd 1')", "2", "ValueError('odd 3')", "4", "ValueError('odd 5')"]
    assert out["raised"] is not None and out["raised"].startswith("odd ")
    assert out["unordered"] == [x * x for x in range(10)]
    assert out["gen"] == [0, 1, 2, 3]


def test_spawn_then_from_id_in_another_process(shoal, python, tmp_path):
    app = write(tmp_path, "spawned.py", """
        import time
        import shoal

        app = shoal.App("e2e-spawn")

        @app.function()
        def slow_double(x):
            time.sleep(1)
            return 2 * x
    """)
    ok(shoal(f"deploy {app}"))
    spawn = write(tmp_path, "spawn_calls.py", """
        import json
        import shoal

        f = shoal.Function.from_name("e2e-spawn", "slow_double")
        print(json.dumps([f.spawn(x).object_id for x in range(3)]))
    """)
    ids = last_json(python(spawn))
    assert len(ids) == 3 and all(i.startswith("fc-") for i in ids)
    collect = write(tmp_path, "collect.py", """
        import json
        import sys
        import shoal

        calls = [shoal.FunctionCall.from_id(i) for i in sys.argv[1:]]
        print(json.dumps(shoal.FunctionCall.gather(*calls)))
    """)
    assert last_json(python(collect, *ids)) == [0, 2, 4]
    ok(shoal("app stop e2e-spawn", timeout_s=60))


def test_a_deployed_function_is_called_from_inside_another_apps_container(shoal, tmp_path):
    lib = write(tmp_path, "lib.py", """
        import shoal

        app = shoal.App("e2e-lib")

        @app.function()
        def double(x):
            return 2 * x
    """)
    ok(shoal(f"deploy {lib}"))
    caller = write(tmp_path, "caller.py", """
        import os
        import shoal

        app = shoal.App("e2e-caller")

        @app.function()
        def via_lib(x):
            double = shoal.Function.from_name("e2e-lib", "double")
            return double.remote(x) + 1, os.environ["SHOAL_CONTAINER_ID"]

        @app.function()
        def fan_out(n):
            # a function of the container's own (ephemeral) app, mapped from inside a container
            return [value for value, _ in via_lib.map(range(n))]

        @app.local_entrypoint()
        def main():
            value, container = via_lib.remote(20)
            print("via lib", value, container)
            print("fan out", fan_out.remote(4))
    """)
    result = ok(shoal(f"run {caller}"))
    assert "via lib 41 ct-" in result.stdout
    assert "fan out [1, 3, 5, 7]" in result.stdout
    ok(shoal("app stop e2e-lib", timeout_s=60))


def test_a_class_enter_hook_runs_once_per_container_across_many_calls(shoal, tmp_path):
    app = write(tmp_path, "model.py", """
        import json
        import os
        import shoal

        app = shoal.App("e2e-cls")
        ENTERED = []

        @app.cls(max_containers=2)
        class Model:
            scale: int = shoal.parameter(default=1)

            @shoal.enter()
            def load(self):
                ENTERED.append(os.getpid())
                self.weights = 10

            @shoal.method()
            def predict(self, x):
                return os.environ["SHOAL_CONTAINER_ID"], len(ENTERED), self.weights * x * self.scale

        triple = Model(scale=3)  # made before the app starts: registered with it

        @app.local_entrypoint()
        def main():
            model = Model()
            results = list(model.predict.map(range(40)))
            print(json.dumps({"results": results, "scaled": triple.predict.remote(2)}))
    """)
    out = last_json(shoal(f"run {app}"))
    results = out["results"]
    assert [r[2] for r in results] == [10 * x for x in range(40)]
    per_container = {}
    for container, entered, _ in results:
        per_container.setdefault(container, set()).add(entered)
    assert 1 <= len(per_container) <= 2
    assert all(counts == {1} for counts in per_container.values()), per_container
    assert out["scaled"][2] == 60


def test_instances_and_option_variants_made_while_the_app_runs_are_added_to_it(shoal, tmp_path):
    app = write(tmp_path, "derived.py", """
        import json
        import time
        import shoal

        app = shoal.App("e2e-derive")

        @app.cls()
        class Scaler:
            factor: int = shoal.parameter(default=1)

            @shoal.method()
            def apply(self, x):
                return x * self.factor

        @app.function(timeout=60)
        def nap(seconds):
            time.sleep(seconds)
            return seconds

        @app.local_entrypoint()
        def main():
            five = Scaler(factor=5)           # constructor arguments chosen at run time
            hurried = nap.with_options(timeout=1)
            try:
                hurried.remote(5)
                timed_out = False
            except shoal.exception.FunctionTimeoutError:
                timed_out = True
            print(json.dumps({"five": five.apply.remote(4), "again": Scaler(factor=5).apply.remote(1),
                              "plain": nap.remote(0), "timed_out": timed_out}))
    """)
    out = last_json(shoal(f"run {app}"))
    assert out == {"five": 20, "again": 5, "plain": 0, "timed_out": True}


def test_retries_succeed_on_the_third_attempt(shoal, tmp_path):
    app = write(tmp_path, "flaky.py", """
        import time
        import shoal

        app = shoal.App("e2e-retries")
        ATTEMPTS = []

        @app.function(retries=2, max_containers=1)
        def flaky():
            ATTEMPTS.append(time.time())
            if len(ATTEMPTS) < 3:
                raise RuntimeError(f"attempt {len(ATTEMPTS)} fails")
            return len(ATTEMPTS), ATTEMPTS[-1] - ATTEMPTS[0]

        @app.local_entrypoint()
        def main():
            attempts, spread = flaky.remote()
            print("attempts", attempts, "spread", round(spread, 1))
    """)
    result = ok(shoal(f"run {app}"))
    line = next(line for line in result.stdout.splitlines() if line.startswith("attempts"))
    _, attempts, _, spread = line.split()
    assert int(attempts) == 3
    assert float(spread) >= 1.8, "retries=2 waits 1 s before each retry"


def test_a_timeout_raises_function_timeout_error_promptly(shoal, tmp_path):
    app = write(tmp_path, "slow.py", """
        import time
        import shoal

        app = shoal.App("e2e-timeout")

        @app.function(timeout=2)
        def nap(seconds):
            time.sleep(seconds)
            return seconds

        @app.local_entrypoint()
        def main():
            nap.remote(0)  # the container is up: what follows measures the timeout only
            started = time.monotonic()
            try:
                nap.remote(10)
                print("no timeout")
            except shoal.exception.FunctionTimeoutError as e:
                print(f"timeout after {time.monotonic() - started:.1f} s: {e}")
    """)
    result = ok(shoal(f"run {app}"))
    line = next(line for line in result.stdout.splitlines() if line.startswith(("timeout", "no timeout")))
    assert line.startswith("timeout after"), line
    assert float(line.split()[2]) < 5.0, line
    assert "nap" in line


def test_a_memory_limit_breach_names_the_limit_and_the_function(shoal, tmp_path):
    app = write(tmp_path, "hog.py", """
        import shoal

        app = shoal.App("e2e-memory")

        @app.function(memory=64)
        def hog():
            data = b"x" * (200 << 20)
            return len(data)

        @app.local_entrypoint()
        def main():
            try:
                hog.remote()
                print("no error")
            except shoal.exception.ExecutionError as e:
                print("ExecutionError:", e)
    """)
    result = ok(shoal(f"run {app}"))
    line = next(line for line in result.stdout.splitlines() if line.startswith(("ExecutionError", "no error")))
    assert line.startswith("ExecutionError"), line
    assert "memory limit" in line and "hog" in line and "64" in line, line


def test_a_container_that_exits_fails_the_input_with_a_clear_error(shoal, tmp_path):
    app = write(tmp_path, "exits.py", """
        import os
        import time
        import shoal

        app = shoal.App("e2e-exit")

        @app.function()
        def quits():
            os._exit(1)

        @app.local_entrypoint()
        def main():
            started = time.monotonic()
            try:
                quits.remote()
                print("no error")
            except shoal.exception.ExecutionError as e:
                print(f"ExecutionError after {time.monotonic() - started:.0f} s: {e}")
    """)
    result = ok(shoal(f"run {app}", timeout_s=LONG_S))
    line = next(line for line in result.stdout.splitlines() if line.startswith(("ExecutionError", "no error")))
    assert line.startswith("ExecutionError"), line
    assert "quits" in line, line
    assert int(line.split()[2]) < 120, line


def test_max_containers_is_never_exceeded_under_load(shoal, shoald, shoal_home, tmp_path):
    app = write(tmp_path, "capped.py", """
        import json
        import os
        import time
        import shoal

        app = shoal.App("e2e-capped")

        @app.function(max_containers=2)
        def work(x):
            time.sleep(0.5)
            return os.environ["SHOAL_CONTAINER_ID"]

        @app.local_entrypoint()
        def main():
            started = time.monotonic()
            ids = list(work.map(range(20)))
            print(json.dumps({"ids": ids, "elapsed": time.monotonic() - started}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env.update(shoald.env(), SHOAL_HOME=str(shoal_home), PYTHONPATH=str(PYTHON_DIR))
    proc = subprocess.Popen([PYTHON, "-m", "shoal", "run", str(app)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    most = 0
    try:
        while proc.poll() is None:
            most = max(most, len(containers_of(shoal, "e2e-capped")))
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=LONG_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = last_json(Result(proc.returncode, stdout, stderr))
    assert len(out["ids"]) == 20
    assert 1 <= len(set(out["ids"])) <= 2
    assert most <= 2, f"saw {most} containers for a function with max_containers=2"
    assert out["elapsed"] >= 4.5, "20 inputs of 0.5 s on at most 2 containers take at least 5 s"


def test_containers_scale_to_zero_after_the_scaledown_window(shoal, python, tmp_path):
    app = write(tmp_path, "brief.py", """
        import shoal

        app = shoal.App("e2e-scaledown")

        @app.function(scaledown_window=2)
        def ping():
            return "pong"
    """)
    ok(shoal(f"deploy {app}"))
    caller = write(tmp_path, "ping.py", """
        import shoal

        print(shoal.Function.from_name("e2e-scaledown", "ping").remote())
    """)
    assert "pong" in ok(python(caller)).stdout
    idle_since = time.monotonic()
    assert wait_until(lambda: not containers_of(shoal, "e2e-scaledown"), timeout_s=15, interval_s=0.5)
    assert time.monotonic() - idle_since < 6.5
    ok(shoal("app stop e2e-scaledown", timeout_s=60))


def test_min_containers_keeps_one_container_warm_without_calls(shoal, tmp_path):
    app = write(tmp_path, "warm.py", """
        import shoal

        app = shoal.App("e2e-warm")

        @app.function(min_containers=1, scaledown_window=2)
        def ready():
            return True
    """)
    ok(shoal(f"deploy {app}"))
    assert wait_until(lambda: len(containers_of(shoal, "e2e-warm")) == 1, timeout_s=LONG_S, interval_s=0.5)
    first = containers_of(shoal, "e2e-warm")[0]["container_id"]
    time.sleep(5)
    still = containers_of(shoal, "e2e-warm")
    assert [c["container_id"] for c in still] == [first], "the warm container was scaled down"
    ok(shoal("app stop e2e-warm", timeout_s=60))
    assert wait_until(lambda: not containers_of(shoal, "e2e-warm"), timeout_s=30, interval_s=0.5)


def test_concurrent_inputs_share_one_container(shoal, tmp_path):
    app = write(tmp_path, "parallel.py", """
        import json
        import os
        import time
        import shoal

        app = shoal.App("e2e-concurrent")

        @app.function()
        @shoal.concurrent(max_inputs=10)
        def nap(x):
            time.sleep(1)
            return os.environ["SHOAL_CONTAINER_ID"]

        @app.local_entrypoint()
        def main():
            nap.remote(0)  # warm
            started = time.monotonic()
            ids = list(nap.map(range(10)))
            print(json.dumps({"ids": ids, "elapsed": time.monotonic() - started}))
    """)
    out = last_json(shoal(f"run {app}"))
    assert len(set(out["ids"])) == 1, out["ids"]
    assert out["elapsed"] < 4.0, out


def test_pending_spawned_calls_survive_a_shoald_crash(shoal, shoald, python, tmp_path):
    """Runs last: it SIGKILLs the shared daemon and restarts it on the same state dir."""
    app = write(tmp_path, "durable.py", """
        import time
        import shoal

        app = shoal.App("e2e-durable")

        @app.function(max_containers=2)
        def slow_times_ten(x):
            time.sleep(3)
            return 10 * x
    """)
    ok(shoal(f"deploy {app}"))
    spawn = write(tmp_path, "spawn_many.py", """
        import json
        import shoal

        f = shoal.Function.from_name("e2e-durable", "slow_times_ten")
        print(json.dumps([f.spawn(x).object_id for x in range(4)]))
    """)
    ids = last_json(python(spawn))
    shoald.restart()  # SIGKILL, then start again on the same state dir and port
    collect = write(tmp_path, "collect_after.py", """
        import json
        import sys
        import shoal

        print(json.dumps([shoal.FunctionCall.from_id(i).get(timeout=600) for i in sys.argv[1:]]))
    """)
    assert last_json(python(collect, *ids)) == [0, 10, 20, 30]
    ok(shoal("app stop e2e-durable", timeout_s=60))
