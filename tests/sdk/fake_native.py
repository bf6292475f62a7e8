"""An in-process stand-in for ``shoal._native.Client`` (the functions part of its contract): it
stores blobs and apps like shoald and runs inputs in a thread pool of this process, through the
same ``shoal._definition`` / ``shoal._partial`` code the guest runtime uses.

Knobs for tests:
- ``client.internal_errors[function_name] = "message"``: every input of that function ends with
  ``internal_error`` and that message (a crash, an OOM kill);
- ``client.log_lines``: lines ``app_logs`` hands out;
- retries run without their delays; a function's ``timeout_ms`` is enforced per attempt.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import threading
import time
import traceback
import types
from typing import Any, Dict, List, Optional, Tuple

from shoal import _definition, _partial


class RpcError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


module = types.SimpleNamespace(RpcError=RpcError)

SPEC_KEYS = {
    "name", "is_class", "is_generator", "definition", "timeout_ms", "max_retries",
    "retry_initial_delay_ms", "retry_backoff_coefficient", "retry_max_delay_ms", "min_containers",
    "max_containers", "buffer_containers", "scaledown_window_ms", "max_inputs", "cpu_millis",
    "memory_mb", "image", "env",
}


def _traceback_text(exc: BaseException) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return "".join(
        "Traceback (most recent call last, in container ct-fake):\n"
        if line == "Traceback (most recent call last):\n" else line
        for line in lines
    )


class FakeFunction:
    def __init__(self, client: "FakeClient", function_id: str, app: "FakeApp", spec: Dict[str, Any]):
        self.client = client
        self.function_id = function_id
        self.app = app
        self.spec = spec
        self.name = spec["name"]
        self.definition = _definition.load_definition(spec["definition"])
        self._lock = threading.Lock()
        self._target: Any = None
        self._instance: Any = None
        self.enter_count = 0
        self.inputs_run = 0

    def ref(self) -> Dict[str, Any]:
        return {
            "function_id": self.function_id,
            "name": self.name,
            "app_name": self.app.name,
            "is_class": bool(self.spec.get("is_class")),
            "is_generator": bool(self.spec.get("is_generator")),
            "definition": self.spec["definition"],
        }

    def _load(self) -> None:
        """Like the guest: import (or unpickle), build the instance once, run enter hooks once."""
        with self._lock:
            if self._target is not None or self._instance is not None:
                return
            obj = self.definition.load_object()
            if self.definition.kind == "function":
                self._target = obj
                return
            args, kwargs = self.definition.constructor()
            instance = _partial.instantiate(obj, args, kwargs)
            for name in _partial.marked(obj, _partial.ENTER):
                getattr(instance, name)()
            if hasattr(obj, "__enter__"):
                instance.__enter__()
            self.enter_count += 1
            self._instance = instance

    def _callable(self, method: Optional[str]) -> Any:
        self._load()
        if self.definition.kind == "function":
            return self._target
        return getattr(self._instance, method)

    def run_attempt(self, args_blob: bytes) -> List[Tuple[str, bytes, str]]:
        """(status, data, error) records of one attempt: generator items, then the final one."""
        try:
            method, args, kwargs = _definition.decode_args(args_blob)
            fn = self._callable(method)
            result = fn(*args, **kwargs)
            if hasattr(result, "__next__") and hasattr(result, "send"):
                records = [("generator_item", _definition.encode_result(x), "") for x in result]
                return records + [("generator_done", b"", "")]
            return [("success", _definition.encode_result(result), "")]
        except Exception as e:  # noqa: BLE001 - the input's failure
            return [("failure", _definition.encode_exception(e), _traceback_text(e))]

    def execute(self, index: int, args_blob: bytes, cancelled: threading.Event) -> List[Dict[str, Any]]:
        crash = self.client.internal_errors.get(self.name)
        if crash is not None:
            return [_out(index, "internal_error", b"", crash, 1)]
        timeout_s = self.spec.get("timeout_ms", 300000) / 1000
        attempts = int(self.spec.get("max_retries", 0)) + 1
        records: List[Tuple[str, bytes, str]] = []
        for attempt in range(1, attempts + 1):
            if cancelled.is_set():
                return [_out(index, "cancelled", b"", "cancelled", attempt)]
            box: Dict[str, Any] = {}
            worker = threading.Thread(target=lambda: box.update(r=self.run_attempt(args_blob)), daemon=True)
            worker.start()
            worker.join(timeout_s)
            self.inputs_run += 1
            if worker.is_alive():
                records = [("timeout", b"", f"{self.name} timed out after {timeout_s:g} s")]
                continue
            records = box["r"]
            if records[-1][0] != "failure":
                break
        return [_out(index, st, data, err, attempt) for st, data, err in records]


def _out(index: int, status: str, data: bytes, error: str, attempts: int) -> Dict[str, Any]:
    return {"index": index, "status": status, "data": data, "error": error, "attempts": attempts}


class FakeApp:
    def __init__(self, client: "FakeClient", app_id: str, name: str, mode: str, version: int):
        self.client = client
        self.app_id = app_id
        self.name = name
        self.mode = mode
        self.version = version
        self.state = "running"
        self.functions: Dict[str, FakeFunction] = {}
        self.heartbeats = 0
        self.closed = False
        self.code: List[Dict[str, Any]] = []

    def info(self) -> Dict[str, Any]:
        return {
            "app_id": self.app_id, "name": self.name, "mode": self.mode, "state": self.state,
            "version": self.version, "created_at_ms": 1700000000000,
            "function_names": sorted(self.functions), "environment": "main",
        }

    def heartbeat(self) -> None:
        self.heartbeats += 1

    def stop(self) -> None:
        self.state = "stopped"

    def close(self) -> None:
        self.closed = True
        if self.mode == "ephemeral":
            self.state = "stopped"


class FakeMapCall:
    def __init__(self, client: "FakeClient", function: FakeFunction):
        self.client = client
        self.function = function
        self.call_id = client._new_id("fc")
        self._cond = threading.Condition()
        self._outputs: List[Dict[str, Any]] = []
        self._pushed = 0
        self._finished = 0
        self._closed = False
        self.cancelled = threading.Event()
        client.calls[self.call_id] = self

    def push(self, items: List[Tuple[int, bytes]]) -> None:
        for index, args in items:
            with self._cond:
                self._pushed += 1
            self.client.pool.submit(self._run, index, args)

    def _run(self, index: int, args: bytes) -> None:
        outs = self.function.execute(index, args, self.cancelled)
        with self._cond:
            self._outputs.extend(outs)
            self._finished += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _done(self) -> bool:
        return self._closed and self._finished == self._pushed

    def poll(self, timeout_s: float) -> Tuple[List[Dict[str, Any]], bool]:
        with self._cond:
            self._cond.wait_for(lambda: self._outputs or self._done(), timeout=timeout_s)
            outs, self._outputs = self._outputs, []
            return outs, self._done() and not self._outputs

    def cancel(self) -> None:
        self.cancelled.set()


class FakeSpawn:
    def __init__(self, client: "FakeClient", function: FakeFunction, args: bytes):
        self.call_id = client._new_id("fc")
        self.cancelled = threading.Event()
        self.future = client.pool.submit(function.execute, 0, args, self.cancelled)

    def cancel(self) -> None:
        self.cancelled.set()


class FakeLogStream:
    def __init__(self, lines: List[Dict[str, Any]], follow: bool):
        self._lines = list(lines)
        self._follow = follow
        self.closed = False

    def poll(self, timeout_s: float) -> Tuple[List[Dict[str, Any]], bool]:
        lines, self._lines = self._lines, []
        if not lines and self._follow:
            time.sleep(min(timeout_s, 0.05))
        return lines, not self._follow

    def close(self) -> None:
        self.closed = True


class FakeClient:
    """Implements the functions part of the native ``Client`` contract in-process."""

    def __init__(self, workers: int = 16):
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="fake-shoald")
        self._ids = itertools.count(1)
        self.blobs: Dict[str, bytes] = {}
        self.put_calls: List[List[str]] = []
        self.apps: List[FakeApp] = []
        self.derived: List[Dict[str, Any]] = []
        self.functions: Dict[str, FakeFunction] = {}
        self.calls: Dict[str, Any] = {}
        self.created: List[Dict[str, Any]] = []
        self.internal_errors: Dict[str, str] = {}
        self.log_lines: List[Dict[str, Any]] = []
        self.stopped_containers: List[str] = []
        self.remote_calls = 0

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06x}"

    def close(self) -> None:
        pass

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- blobs and apps ---

    def missing_blobs(self, hashes: List[str]) -> List[str]:
        return [h for h in hashes if h not in self.blobs]

    def put_blobs(self, blobs: List[Tuple[str, bytes]]) -> None:
        for digest, data in blobs:
            if hashlib.sha256(data).hexdigest() != digest:
                raise RpcError("invalid_argument", f"blob {digest} does not match its content")
            self.blobs[digest] = bytes(data)
        self.put_calls.append([d for d, _ in blobs])

    def create_app(self, name: str, mode: str, functions: List[Dict[str, Any]], code: List[Dict[str, Any]]):
        if mode not in ("ephemeral", "detached", "deployed"):
            raise RpcError("invalid_argument", f"unknown app mode {mode!r}")
        for item in code:
            if item["sha256"] not in self.blobs:
                raise RpcError("invalid_argument", f"code file {item['path']} was not uploaded")
            if item["path"].startswith("/") or ".." in item["path"].split("/"):
                raise RpcError("invalid_argument", f"code path {item['path']} is not normalised")
        names = [f["name"] for f in functions]
        if len(set(names)) != len(names):
            raise RpcError("invalid_argument", f"duplicate function names in {names}")
        version = 0
        if mode == "deployed":
            version = 1 + max((a.version for a in self.apps if a.name == name and a.mode == "deployed"), default=0)
        app = FakeApp(self, self._new_id("ap"), name, mode, version)
        app.code = list(code)
        for spec in functions:
            unknown = set(spec) - SPEC_KEYS
            if unknown:
                raise RpcError("invalid_argument", f"unknown function spec keys {sorted(unknown)}")
            fn = FakeFunction(self, self._new_id("fu"), app, dict(spec))
            app.functions[fn.name] = fn
            self.functions[fn.function_id] = fn
        self.apps.append(app)
        self.created.append({"name": name, "mode": mode, "functions": functions, "code": code, "app": app})
        return app, app.info(), [f.ref() for f in app.functions.values()]

    def _live_app(self, name: str) -> Optional[FakeApp]:
        live = [a for a in self.apps if a.name == name and a.state == "running"]
        return live[-1] if live else None

    def lookup(self, app_name: str, name: str) -> Dict[str, Any]:
        app = self._live_app(app_name)
        if app is None:
            raise RpcError("not_found", f"no app named {app_name!r} is deployed or running")
        fn = app.functions.get(name)
        if fn is None:
            raise RpcError("not_found", f"the app {app_name!r} has no function {name!r}")
        return fn.ref()

    def derive_function(self, function_id: str, name: str, overrides: Dict[str, Any]) -> Dict[str, Any]:
        """Like shoald's Functions.derive: a function added to the base's running app with some
        spec fields replaced; idempotent by name."""
        base = self._function(function_id)
        app = base.app
        if name in app.functions:
            return app.functions[name].ref()
        unknown = set(overrides) - SPEC_KEYS
        if unknown:
            raise RpcError("invalid_argument", f"unknown function spec keys {sorted(unknown)}")
        spec = dict(base.spec, **overrides, name=name)
        fn = FakeFunction(self, self._new_id("fu"), app, spec)
        app.functions[name] = fn
        self.functions[fn.function_id] = fn
        self.derived.append({"base": base.name, "name": name, "overrides": dict(overrides)})
        return fn.ref()

    def _function(self, function_id: str) -> FakeFunction:
        fn = self.functions.get(function_id)
        if fn is None:
            raise RpcError("not_found", f"no function {function_id}")
        if fn.app.state != "running":
            raise RpcError("not_found", f"the app {fn.app.name!r} of {fn.name} is stopped")
        return fn

    # --- calls ---

    def call(self, function_id: str, args: bytes) -> Dict[str, Any]:
        self.remote_calls += 1
        fn = self._function(function_id)
        outs = fn.execute(0, args, threading.Event())
        return outs[-1]

    def map(self, function_id: str) -> FakeMapCall:
        return FakeMapCall(self, self._function(function_id))

    def spawn(self, function_id: str, args: bytes) -> str:
        call = FakeSpawn(self, self._function(function_id), args)
        self.calls[call.call_id] = call
        return call.call_id

    def get_outputs(self, call_id: str, timeout_ms: int) -> Tuple[List[Dict[str, Any]], bool]:
        call = self.calls.get(call_id)
        if call is None:
            raise RpcError("not_found", f"no function call {call_id}")
        if call.cancelled.is_set():
            return [_out(0, "cancelled", b"", f"the call {call_id} was cancelled", 1)], True
        try:
            outs = call.future.result(timeout=timeout_ms / 1000)
        except concurrent.futures.TimeoutError:
            return [], False
        return outs, True

    def cancel(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is None:
            raise RpcError("not_found", f"no function call {call_id}")
        call.cancel()

    # --- operations ---

    def list_apps(self) -> List[Dict[str, Any]]:
        return [a.info() for a in self.apps]

    def stop_app(self, name: str) -> None:
        app = self._live_app(name)
        if app is None:
            raise RpcError("not_found", f"no running app named {name!r}")
        app.state = "stopped"

    def app_logs(self, name: str, follow: bool) -> FakeLogStream:
        if not any(a.name == name for a in self.apps):
            raise RpcError("not_found", f"no app named {name!r}")
        return FakeLogStream(self.log_lines, follow)

    def list_containers(self) -> List[Dict[str, Any]]:
        return [
            {"container_id": "ct-000001", "app_name": a.name, "function_name": f.name, "state": "idle",
             "inflight": 0, "started_at_ms": 1700000000000, "node_id": "node-1"}
            for a in self.apps if a.state == "running" for f in a.functions.values()
        ]

    def stop_container(self, container_id: str) -> None:
        self.stopped_containers.append(container_id)
