"""An in-process stand-in for ``shoal._native.Client`` (the functions part of its contract): it
stores blobs and apps like shoald and runs inputs in a thread pool of this process, through the
same ``shoal._definition`` / ``shoal._partial`` code the guest runtime uses.

Knobs for tests:
- ``client.internal_errors[function_name] = "message"``: every input of that function ends with
  ``internal_error`` and that message (a crash, an OOM kill);
- ``client.log_lines``: lines ``app_logs`` hands out; a followed stream then ends like shoald's
  (``will_end``): once its app is stopped, after ``client.log_lines_after_stop`` (what exit hooks
  print), unless ``client.log_end = False`` (containers that never finish their output);
- retries run without their delays; a function's ``timeout_ms`` is enforced per attempt;
- images: ``build_image`` checks the spec against schema/images.capnp, records it in
  ``client.image_builds`` and emits step/line events; ``client.image_failures[label_part] =
  (exit_code, lines)`` fails the step whose label contains ``label_part``.
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
    "memory_mb", "image", "env", "files",
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
    def __init__(self, client: "FakeClient", app: "FakeApp", follow: bool):
        self._client = client
        self._app = app
        self._lines = list(client.log_lines)
        self._follow = follow
        self.closed = False
        self.will_end = follow
        self.ended = False

    def poll(self, timeout_s: float) -> Tuple[List[Dict[str, Any]], bool]:
        if self.closed:
            return [], True
        lines, self._lines = self._lines, []
        if self.will_end and not self.ended and self._app.state == "stopped" and self._client.log_end:
            lines += self._client.log_lines_after_stop
            self.ended = True
        if not lines and self._follow and not self.ended:
            time.sleep(min(timeout_s, 0.05))
        return lines, not self._follow or self.ended

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
        self.log_lines_after_stop: List[Dict[str, Any]] = []
        self.log_end = True
        self.stopped_containers: List[str] = []
        self.remote_calls = 0
        self.images: Dict[str, Dict[str, Any]] = {}
        self.image_builds: List[Dict[str, Any]] = []
        #: label substring -> (exit code, output lines): that build step fails.
        self.image_failures: Dict[str, Tuple[int, List[str]]] = {}
        #: whether cached steps send a "cached" event (the server may answer at once instead)
        self.image_cached_events = True

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
            for item in spec.get("files") or []:  # copy=False files, like shoald's check_files
                if item["sha256"] not in self.blobs:
                    raise RpcError("invalid_argument", f"the content of /{item['path']} was not uploaded")
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
        apps = [a for a in self.apps if a.name == name]
        if not apps:
            raise RpcError("not_found", f"no app named {name!r}")
        return FakeLogStream(self, self._live_app(name) or apps[-1], follow)

    def list_containers(self) -> List[Dict[str, Any]]:
        return [
            {"container_id": "ct-000001", "app_name": a.name, "function_name": f.name, "state": "idle",
             "inflight": 0, "started_at_ms": 1700000000000, "node_id": "node-1"}
            for a in self.apps if a.state == "running" for f in a.functions.values()
        ]

    def stop_container(self, container_id: str) -> None:
        self.stopped_containers.append(container_id)

    # --- images ---

    def build_image(self, spec: Dict[str, Any]) -> "FakeBuild":
        return _image_build(self, spec)

    def list_images(self) -> List[Dict[str, Any]]:
        return [dict(info) for info in self.images.values()]

    def inspect_image(self, image_id: str) -> Dict[str, Any]:
        info = self.images.get(image_id)
        if info is None:
            raise RpcError("not_found", f"no image {image_id}")
        return dict(info)

    def remove_image(self, image_id: str) -> None:
        if image_id not in self.images:
            raise RpcError("not_found", f"no image {image_id}")
        children = [i for i, info in self.images.items() if info["parent_id"] == image_id]
        if children:
            raise RpcError("invalid_argument", f"the image {children[0]} is built on {image_id}")
        del self.images[image_id]


# --- images (schema/images.capnp) ---------------------------------------------------------------------

IMAGE_STEP_KEYS = {"kind", "args", "blob", "env", "force_build", "registry_auth", "label"}
IMAGE_KINDS = {
    "debian_slim", "scratch", "registry", "apt_install", "pip_install", "run_commands",
    "run_function", "add_files", "env", "workdir", "user", "entrypoint", "cmd",
}
IMAGE_METADATA = {"env", "workdir", "user", "entrypoint", "cmd"}


class FakeBuild:
    """A build handle: hands out the events of a build already computed, a few per poll."""

    def __init__(self, events: List[Dict[str, Any]], result: Dict[str, Any], error: Optional[RpcError]):
        self._events = list(events)
        self._result = result
        self._error = error
        self.polls = 0
        self.closed = False

    def poll(self, timeout_s: float) -> Tuple[List[Dict[str, Any]], bool]:
        self.polls += 1
        events, self._events = self._events[:3], self._events[3:]
        return events, not self._events

    def result(self) -> Dict[str, Any]:
        if self._events:
            raise RpcError("internal", "result() before the build is done")
        if self._error is not None:
            raise self._error
        return self._result

    def close(self) -> None:
        self.closed = True


def _image_build(client: "FakeClient", spec: Dict[str, Any]) -> FakeBuild:
    """Like the image_builder: ids chained from the parent and the canonical step; a step runs
    when its id is unknown, forced, SHOAL_IGNORE_CACHE is set (layer steps), or its parent ran."""
    if set(spec) != {"steps", "ignore_cache"}:
        raise RpcError("invalid_argument", f"image spec keys {sorted(spec)}")
    steps = spec["steps"]
    if not steps:
        raise RpcError("invalid_argument", "an image spec needs a base step")
    client.image_builds.append(spec)
    events: List[Dict[str, Any]] = []
    results: List[Dict[str, Any]] = []
    parent = ""
    rebuilt = False
    env: Dict[str, str] = {}
    for index, step in enumerate(steps):
        if set(step) != IMAGE_STEP_KEYS:
            raise RpcError("invalid_argument", f"step {index + 1}: keys {sorted(step)}")
        kind = step["kind"]
        if kind not in IMAGE_KINDS:
            raise RpcError("invalid_argument", f"step {index + 1}: unknown kind {kind!r}")
        if (index == 0) != (kind in ("debian_slim", "scratch", "registry")):
            raise RpcError("invalid_argument", f"step {index + 1}: {kind} in the wrong place")
        if not isinstance(step["args"], list) or not all(isinstance(a, str) for a in step["args"]):
            raise RpcError("invalid_argument", f"step {index + 1}: args must be a list of str")
        if step["blob"] and step["blob"] not in client.blobs:
            raise RpcError("invalid_argument", f"step {index + 1}: blob {step['blob']} was not uploaded")
        canonical = "\x00".join([kind, *step["args"], step["blob"]])
        image_id = "im-" + hashlib.sha256(f"{parent}\n{canonical}".encode()).hexdigest()[:32]
        layer = kind not in IMAGE_METADATA
        reason = ""
        if step["force_build"]:
            reason = "forced (force_build=True)"
        elif spec["ignore_cache"] and layer and index > 0:
            reason = "SHOAL_IGNORE_CACHE is set"
        elif rebuilt:
            reason = "its parent was rebuilt"
        elif image_id not in client.images:
            reason = "no cached layer for this step (it or an input changed)"
        if kind == "env":
            env.update(a.split("=", 1) for a in step["args"])
        failure = next((v for k, v in client.image_failures.items() if k in step["label"]), None)
        if not reason:
            status = {"index": index, "image_id": image_id, "status": "cached", "reason": "",
                      "duration_ms": 0, "layer_bytes": 0}
            if client.image_cached_events:
                events.append(dict(status, type="step"))
            results.append(status)
            parent = image_id
            continue
        rebuilt = True
        events.append({"type": "step", "index": index, "image_id": image_id, "status": "building",
                       "reason": reason, "duration_ms": 0, "layer_bytes": 0})
        if kind == "run_commands":
            for command in step["args"]:
                events.append({"type": "line", "index": index, "text": f"+ {command}"})
        if failure is not None:
            code, lines = failure
            for line in lines:
                events.append({"type": "line", "index": index, "text": line})
            events.append({"type": "step", "index": index, "image_id": image_id, "status": "failed",
                           "reason": reason, "duration_ms": 2100, "layer_bytes": 0})
            error = RpcError("invalid_argument", f"step {index + 1} ({step['label']}) failed with exit code {code}")
            return FakeBuild(events, {}, error)
        built = {"index": index, "image_id": image_id, "status": "built", "reason": reason,
                 "duration_ms": 2100 if layer else 0, "layer_bytes": 12_300_000 if layer else 0}
        events.append(dict(built, type="step"))
        results.append(built)
        base = client.images.get(parent, {"layers": [], "content_bytes": 0})
        client.images[image_id] = {
            "image_id": image_id, "parent_id": parent, "step": canonical.replace("\x00", " "),
            "created_at_ms": 1700000000000 + len(client.images),
            "layers": base["layers"] + ([hashlib.sha256(image_id.encode()).hexdigest()] if layer else []),
            "content_bytes": base["content_bytes"] + built["layer_bytes"], "env": dict(env), "workdir": "/app",
            "user": "", "entrypoint": [], "cmd": ["python"], "python": "/usr/bin/python3",
        }
        parent = image_id
    return FakeBuild(events, {"image_id": parent, "steps": results}, None)


def fake_connection(client: "FakeClient"):
    """The real ``_client.Connection`` over `client` (what ``_client.connect`` would return)."""
    from shoal import _client

    target = _client.Target("fake:1", "tok-fake", embedded=False, source="test")
    return _client.Connection(target, client, module)
