"""The guest runtime: runs one function or class inside a container, driven by the supervisor over
the guest socket (docs/guest-protocol.md).

Threads:

- the main thread: HELLO, waits for INIT, imports the user's code, runs ``@enter`` hooks, sends
  READY, then waits for SHUTDOWN, lets running inputs finish and runs ``@exit`` hooks;
- ``shoal-reader``: reads every frame, starts inputs, delivers CANCEL and REPLY (so nested calls
  work while inputs and hooks run);
- ``shoal-input-N``: a pool of ``max_inputs`` threads for sync functions;
- ``shoal-asyncio``: one event loop for async functions and hooks, started on first use.

Outputs are written by whichever thread finishes an input; when several finish at once, one of
them writes them all in one OUTPUTS frame ("everything finished since the last frame").

Every input ends with exactly one terminal output (success, failure, done or cancelled), after any
number of generator items. Exit codes: 0 after SHUTDOWN, 1 after FATAL (import or ``@enter``
failure, or a protocol violation by the supervisor), 2 when ``SHOAL_GUEST_SOCKET`` is unset,
70 when the connection is lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import inspect
import os
import platform
import socket
import sys
import threading
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

import cloudpickle

from .. import _definition, _partial, exception
from . import client, protocol

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_LOST = 70

#: Frames of the runtime itself (and of importlib) are cut from the front of user tracebacks.
_SHOAL_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
#: A traceback longer than this is cut to its last part (the interesting one).
_MAX_ERROR_CHARS = 1 << 20


_IMPORTLIB_DIR = os.path.dirname(importlib.__file__) + os.sep


def _internal_frame(filename: str) -> bool:
    return filename.startswith((_SHOAL_DIR, _IMPORTLIB_DIR, "<frozen importlib"))


def format_exception(exc: BaseException, container_id: str = "") -> str:
    """The remote traceback text: user frames only, headed "Traceback (most recent call last, in
    container ct-...)"."""
    tb = exc.__traceback__
    while tb is not None and _internal_frame(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    if tb is None:
        tb = exc.__traceback__  # raised inside Shoal itself: keep every frame
    where = f"in container {container_id}" if container_id else "in the container"
    header = f"Traceback (most recent call last, {where}):\n"
    lines = traceback.format_exception(type(exc), exc, tb)
    text = "".join(header if line == "Traceback (most recent call last):\n" else line
                   for line in lines)
    if len(text) > _MAX_ERROR_CHARS:
        text = "[traceback cut to its last part]\n" + text[-_MAX_ERROR_CHARS:]
    return text


class Connection:
    """The guest socket: framed sends from any thread, receives from the reader thread only."""

    def __init__(self, sock: socket.socket, max_payload_bytes: int = protocol.MAX_PAYLOAD_BYTES):
        self._sock = sock
        self._write_lock = threading.Lock()
        self._decoder = protocol.FrameDecoder(max_payload_bytes)

    def send(self, frame: protocol.Frame) -> None:
        data = protocol.encode(frame)
        with self._write_lock:
            self._sock.sendall(data)

    def recv(self) -> Optional[protocol.Frame]:
        """The next frame; None at end of stream. Raises ProtocolError or OSError."""
        while True:
            frame = self._decoder.next()
            if frame is not None:
                return frame
            data = self._sock.recv(1 << 18)
            if not data:
                return None
            self._decoder.feed(data)

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass  # deliberately ignored: the process exits next


class _Input:
    __slots__ = ("id", "cancelled", "done", "is_async", "future", "task")

    def __init__(self, input_id: int) -> None:
        self.id = input_id
        self.cancelled = False
        self.done = False
        self.is_async = False
        self.future: Optional[concurrent.futures.Future] = None
        self.task: Optional[asyncio.Task] = None


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


class GuestRuntime:
    def __init__(self, conn: Connection, env: Dict[str, str]) -> None:
        self.conn = conn
        self.container_id = env.get("SHOAL_CONTAINER_ID", "")
        self.code_dir = env.get("SHOAL_CODE_DIR") or None
        self.max_inputs = 1
        self.name = "?"

        self._init: Optional[protocol.Init] = None
        self._init_or_shutdown = threading.Event()
        self._shutdown = threading.Event()
        self._ready = False
        self._exiting = False

        # What runs: a function, or an instance and its @shoal.method()s.
        self._kind = "function"
        self._function: Optional[Tuple[Callable, bool]] = None
        self._cls: Optional[type] = None
        self._instance: Any = None
        self._methods: Dict[str, Tuple[Callable, bool]] = {}

        self._lock = threading.Lock()  # guards _inputs and each _Input's flags
        self._idle = threading.Condition(self._lock)  # notified when _inputs becomes empty
        self._inputs: Dict[int, _Input] = {}
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_lock = threading.Lock()

        self._out_lock = threading.Lock()  # guards _out_pending and _flushing
        self._flushed = threading.Condition(self._out_lock)  # notified when _flushing ends
        self._out_pending: List[protocol.Output] = []
        self._flushing = False
        self._flush_scheduled = False  # a _flush_soon is queued on the event loop
        self._loop_thread_id: Optional[int] = None

    # --- lifecycle (main thread) ------------------------------------------------------------------

    def run(self) -> None:
        """Never returns: the process exits with one of the EXIT_* codes."""
        self._send(
            protocol.Hello(
                protocol.PROTOCOL_VERSION, platform.python_version(), cloudpickle.__version__
            )
        )
        client._attach(self._send)
        threading.Thread(target=self._read_loop, name="shoal-reader", daemon=True).start()

        self._init_or_shutdown.wait()
        if self._init is None:  # SHUTDOWN before INIT
            self._exit(EXIT_OK)
        try:
            self._load(self._init)
        except BaseException as e:  # noqa: B902 - any failure of user code is FATAL
            self._fatal(format_exception(e, self.container_id))
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.max_inputs, thread_name_prefix="shoal-input"
        )
        self._ready = True
        self._send(protocol.Ready(self.max_inputs))
        self._shutdown.wait()
        # Drain: inputs already running finish and send their outputs (the supervisor kills the
        # container after its grace period if they take too long); nothing new starts.
        with self._idle:
            while self._inputs:
                self._idle.wait()
        with self._flushed:  # another thread may still be writing the last outputs
            while self._flushing or self._out_pending:
                self._flushed.wait()
        self._run_exit_hooks()
        self._exit(EXIT_OK)

    def _load(self, init: protocol.Init) -> None:
        if self.code_dir and self.code_dir not in sys.path:
            sys.path.insert(0, self.code_dir)
        definition = _definition.load_definition(init.definition)
        self.name = definition.name
        self.max_inputs = max(1, init.max_inputs)
        obj = definition.load_object()
        if definition.kind == "function":
            self._function = (obj, _is_async(obj))
            return
        self._kind = "class"
        self._cls = obj
        args, kwargs = definition.constructor()
        self._instance = _partial.instantiate(obj, args, kwargs)
        for name in _partial.marked(obj, _partial.METHOD):
            bound = getattr(self._instance, name)
            self._methods[name] = (bound, _is_async(bound))
        enter = _partial.marked(obj, _partial.ENTER)
        for name in enter:
            self._call_hook(getattr(self._instance, name))
        for legacy in ("__enter__", "__aenter__"):  # unless marked, which ran them already
            if hasattr(obj, legacy) and legacy not in enter:
                self._call_hook(getattr(self._instance, legacy))

    def _call_hook(self, hook: Callable, *args: Any) -> None:
        result = hook(*args)
        if inspect.isawaitable(result):
            asyncio.run_coroutine_threadsafe(_await(result), self._event_loop()).result()

    def _run_exit_hooks(self) -> None:
        if self._instance is None:
            return
        marked = _partial.marked(self._cls, _partial.EXIT)
        calls: List[Tuple[Callable, tuple]] = [(getattr(self._instance, n), ()) for n in marked]
        for legacy in ("__exit__", "__aexit__"):  # unless marked, which ran them already
            if hasattr(self._cls, legacy) and legacy not in marked:
                calls.append((getattr(self._instance, legacy), (None, None, None)))
        for hook, args in calls:
            try:
                self._call_hook(hook, *args)
            except BaseException as e:  # noqa: B902 - report and run the remaining hooks
                sys.stderr.write(
                    f"shoal: the exit hook {getattr(hook, '__qualname__', hook)} failed:\n"
                    + format_exception(e, self.container_id)
                )

    def _exit(self, code: int) -> None:
        self._exiting = True
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass  # deliberately ignored: exiting anyway
        self.conn.close()
        os._exit(code)

    def _fatal(self, text: str) -> None:
        sys.stderr.write(text if text.endswith("\n") else text + "\n")
        try:
            self.conn.send(protocol.Fatal(text))
        except OSError:
            pass  # deliberately ignored: the supervisor sees the exit status instead
        self._exit(EXIT_FATAL)

    def _send(self, frame: protocol.Frame) -> None:
        try:
            self.conn.send(frame)
        except OSError as e:
            self._lost(e)

    def _lost(self, reason: Any) -> None:
        if self._exiting:
            return  # after SHUTDOWN the supervisor may hang up first; exit hooks still finish
        sys.stderr.write(f"shoal: lost the connection to the supervisor ({reason}); exiting\n")
        sys.stderr.flush()
        os._exit(EXIT_LOST)

    # --- frames (reader thread) ---------------------------------------------------------------------

    def _read_loop(self) -> None:
        reason: Any = "end of stream"
        try:
            while True:
                frame = self.conn.recv()
                if frame is None:
                    break
                self._handle(frame)
        except protocol.ProtocolError as e:
            self._fatal(f"guest protocol violation: {e}")
        except OSError as e:
            reason = e
        except BaseException as e:  # noqa: B902 - a bug in the runtime must not hang the container
            self._fatal("shoal guest runtime failed:\n" + "".join(traceback.format_exception(e)))
        self._lost(reason)

    def _handle(self, frame: protocol.Frame) -> None:
        t = frame.TYPE
        if t == protocol.INPUTS:
            if self._exiting:
                return  # after SHUTDOWN nothing starts; the supervisor re-queues them
            if not self._ready:
                raise protocol.ProtocolError("INPUTS arrived before READY")
            for item in frame.items:
                self._start_input(item)
        elif t == protocol.CANCEL:
            self._cancel(frame.input_id)
        elif t == protocol.REPLY:
            client._deliver(frame)
        elif t == protocol.INIT:
            if self._init is not None:
                raise protocol.ProtocolError("a second INIT arrived")
            self._init = frame
            self._init_or_shutdown.set()
        elif t == protocol.SHUTDOWN:
            self._exiting = True
            self._shutdown.set()
            self._init_or_shutdown.set()
        else:
            raise protocol.ProtocolError(
                f"the supervisor sent {protocol.TYPE_NAMES[t]}, a frame only the guest sends"
            )

    def _start_input(self, item: protocol.Input) -> None:
        rec = _Input(item.id)
        with self._lock:
            running = self._inputs.get(item.id)
            if running is not None and not running.done:
                raise protocol.ProtocolError(f"input {item.id} arrived while it is running")
            self._inputs[item.id] = rec
        try:
            try:
                method, args, kwargs = _definition.decode_args(item.args)
            except Exception as e:
                raise exception.DeserializationError(
                    f"the arguments of an input of {self.name} cannot be unpickled "
                    f"(are the local and container environments the same?): "
                    f"{type(e).__name__}: {e}"
                ) from e
            fn, is_async = self._target(method)
        except BaseException as e:  # noqa: B902 - reported as this input's failure
            self._finish_exception(rec, e)
            return
        if is_async:
            rec.is_async = True
            self._event_loop().call_soon_threadsafe(self._start_task, rec, fn, args, kwargs)
        else:
            rec.future = self._pool.submit(self._run_sync, rec, fn, args, kwargs)

    def _target(self, method: Optional[str]) -> Tuple[Callable, bool]:
        if self._kind == "function":
            if method is not None:
                raise exception.InvalidError(
                    f"{self.name} is a function; an input for it cannot name the method {method!r}"
                )
            return self._function
        target = self._methods.get(method) if method is not None else None
        if target is None:
            known = ", ".join(sorted(self._methods)) or "none"
            if method is None:
                raise exception.InvalidError(
                    f"{self.name} is a class; an input must name one of its methods ({known})"
                )
            raise exception.InvalidError(
                f"{self.name}.{method} is not a @shoal.method() of {self.name} (methods: {known})"
            )
        return target

    def _cancel(self, input_id: int) -> None:
        with self._lock:
            rec = self._inputs.get(input_id)
            if rec is None or rec.cancelled:
                return  # finished already (its output is on the way) or cancelled twice
            rec.cancelled = True
            is_async, future = rec.is_async, rec.future
        if is_async:
            self._event_loop().call_soon_threadsafe(_cancel_task, rec)
        elif future is not None and future.cancel():
            self._finish(rec, protocol.CANCELLED)
        # else: the thread runs on; its result is dropped and CANCELLED sent when it returns.

    # --- running inputs -----------------------------------------------------------------------------

    def _run_sync(self, rec: _Input, fn: Callable, args: tuple, kwargs: dict) -> None:
        if rec.cancelled:
            self._finish(rec, protocol.CANCELLED)
            return
        try:
            result = fn(*args, **kwargs)
            if inspect.isgenerator(result):
                self._stream_sync(rec, result)
            elif inspect.isasyncgen(result) or inspect.isawaitable(result):
                # A sync function returned something to await: the event loop finishes it and
                # this thread is free again.
                with self._lock:
                    rec.is_async = True
                self._event_loop().call_soon_threadsafe(
                    self._start_task, rec, _identity, (result,), {}
                )
            else:
                self._finish_value(rec, result)
        except BaseException as e:  # noqa: B902 - any exception of user code is its output
            self._finish_exception(rec, e)

    def _stream_sync(self, rec: _Input, gen: Any) -> None:
        try:
            for item in gen:
                if rec.cancelled:
                    break
                self._emit_item(rec, item)
        finally:
            gen.close()
        self._finish(rec, protocol.CANCELLED if rec.cancelled else protocol.DONE)

    def _start_task(self, rec: _Input, fn: Callable, args: tuple, kwargs: dict) -> None:
        if rec.cancelled:
            self._finish(rec, protocol.CANCELLED)
            return
        rec.task = asyncio.get_running_loop().create_task(self._run_async(rec, fn, args, kwargs))

    async def _run_async(self, rec: _Input, fn: Callable, args: tuple, kwargs: dict) -> None:
        try:
            result = fn(*args, **kwargs)
            if inspect.isasyncgen(result):
                try:
                    async for item in result:
                        self._emit_item(rec, item)
                finally:
                    await result.aclose()
                self._finish(rec, protocol.CANCELLED if rec.cancelled else protocol.DONE)
                return
            if inspect.isawaitable(result):
                result = await result
            if inspect.isgenerator(result):
                self._stream_sync(rec, result)
                return
            self._finish_value(rec, result)
        except asyncio.CancelledError:
            self._finish(rec, protocol.CANCELLED)
        except BaseException as e:  # noqa: B902 - any exception of user code is its output
            self._finish_exception(rec, e)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                started = threading.Event()
                threading.Thread(
                    target=self._run_loop, args=(loop, started), name="shoal-asyncio", daemon=True
                ).start()
                started.wait()
                self._loop = loop
            return self._loop

    def _run_loop(self, loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        self._loop_thread_id = threading.get_ident()
        started.set()
        loop.run_forever()

    # --- outputs ------------------------------------------------------------------------------------

    def _emit_item(self, rec: _Input, value: Any) -> None:
        try:
            data = _definition.encode_result(value)
        except Exception as e:
            raise exception.SerializationError(
                f"a value yielded by {self.name} cannot be pickled: {type(e).__name__}: {e}"
            ) from e
        self._check_size(data, "a value yielded by")
        self._emit(protocol.Output(rec.id, protocol.ITEM, data, ""))

    def _finish_value(self, rec: _Input, value: Any) -> None:
        if rec.cancelled:
            self._finish(rec, protocol.CANCELLED)
            return
        try:
            try:
                data = _definition.encode_result(value)
            except Exception as e:
                raise exception.SerializationError(
                    f"the return value of {self.name} cannot be pickled: {type(e).__name__}: {e}"
                ) from e
            self._check_size(data, "the return value of")
        except exception.SerializationError as e:
            self._finish_exception(rec, e)
            return
        self._finish(rec, protocol.SUCCESS, data)

    def _check_size(self, data: bytes, what: str) -> None:
        limit = protocol.MAX_PAYLOAD_BYTES - 4 - protocol.output_record_bytes(
            protocol.Output(0, 0)
        )
        if len(data) > limit:
            raise exception.SerializationError(
                f"{what} {self.name} pickles to {len(data)} bytes, over the {limit}-byte limit "
                "of one output (return a smaller value, or write it to a volume)"
            )

    def _finish_exception(self, rec: _Input, exc: BaseException) -> None:
        if rec.cancelled:
            self._finish(rec, protocol.CANCELLED)
            return
        error = format_exception(exc, self.container_id)
        data = _definition.encode_exception(exc)
        out = protocol.Output(rec.id, protocol.FAILURE, data, error)
        if protocol.output_record_bytes(out) + 4 > protocol.MAX_PAYLOAD_BYTES:
            out.data = b""  # the traceback text still tells what happened
        self._finish(rec, out.status, out.data, out.error)

    def _finish(self, rec: _Input, status: int, data: bytes = b"", error: str = "") -> None:
        """Sends the input's terminal output, once."""
        with self._lock:
            if rec.done:
                return
            rec.done = True
        self._emit(protocol.Output(rec.id, status, data, error))
        with self._lock:
            if self._inputs.get(rec.id) is rec:
                del self._inputs[rec.id]
            if not self._inputs:
                self._idle.notify_all()

    def _emit(self, out: protocol.Output) -> None:
        with self._out_lock:
            self._out_pending.append(out)
            if self._flushing:
                return  # the thread writing now picks it up
            if threading.get_ident() == self._loop_thread_id:
                # On the event loop, tasks finishing in the same loop iteration share one frame.
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    self._loop.call_soon(self._flush_soon)
                return
            self._flushing = True
        self._flush()

    def _flush_soon(self) -> None:
        with self._out_lock:
            self._flush_scheduled = False
            if self._flushing or not self._out_pending:
                return
            self._flushing = True
        self._flush()

    def _flush(self) -> None:
        """Writes pending outputs until none are left; the caller set ``_flushing``."""
        while True:
            with self._out_lock:
                batch = self._out_pending
                if not batch:
                    self._flushing = False
                    self._flushed.notify_all()
                    return
                self._out_pending = []
            try:
                self._send_outputs(batch)
            except BaseException:
                with self._out_lock:
                    self._flushing = False
                    self._flushed.notify_all()
                raise

    def _send_outputs(self, batch: List[protocol.Output]) -> None:
        limit = protocol.MAX_PAYLOAD_BYTES - 4
        chunk: List[protocol.Output] = []
        size = 0
        for out in batch:
            n = protocol.output_record_bytes(out)
            if chunk and size + n > limit:
                self._send(protocol.Outputs(chunk))
                chunk, size = [], 0
            chunk.append(out)
            size += n
        if chunk:
            self._send(protocol.Outputs(chunk))


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _identity(value: Any) -> Any:
    return value


def _cancel_task(rec: _Input) -> None:
    """On the event loop, after the task was started (callbacks run in order)."""
    if rec.task is not None:
        rec.task.cancel()


def main() -> None:
    path = os.environ.get("SHOAL_GUEST_SOCKET")
    if not path:
        sys.stderr.write("shoal: SHOAL_GUEST_SOCKET is not set; the guest runs inside containers\n")
        sys.stderr.flush()
        os._exit(EXIT_USAGE)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        sys.stderr.write(f"shoal: cannot connect to the guest socket {path}: {e}\n")
        sys.stderr.flush()
        os._exit(EXIT_LOST)
    GuestRuntime(Connection(sock), dict(os.environ)).run()
