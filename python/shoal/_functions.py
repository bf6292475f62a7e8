"""``shoal.Function`` and ``shoal.FunctionCall``: calling functions that run in containers.

A :class:`Function` is a handle on one server-side function (``_Handle``) plus, for the methods
of a class, the method's name. The handle is *hydrated* (knows its ``function_id``) when its app
runs or is deployed from this process, or lazily by name: ``Function.from_name`` on a user's
machine, and every function inside a container (looked up in ``SHOAL_APP_NAME`` over the guest
channel). All calls go through :mod:`shoal._transport`, so the code here is the same on both sides.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import os
import pickle
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from . import _aio, _options, _transport
from .exception import (
    DeserializationError,
    ExecutionError,
    FunctionTimeoutError,
    InputCancellation,
    InternalError,
    InvalidError,
    NotFoundError,
    RemoteError,
    RemoteTraceback,
    SerializationError,
    TimeoutError,
)

if TYPE_CHECKING:  # pragma: no cover
    from ._app import App

#: ``map`` sends inputs in batches of at most this many, or this many bytes.
MAP_BATCH_INPUTS = 256
MAP_BATCH_BYTES = 4 << 20
#: How long one wait on the server lasts before Python gets a chance to handle Ctrl-C.
POLL_S = 0.5
GET_CHUNK_S = 2.0
#: Concurrent spawns of ``spawn_map``.
SPAWN_MAP_THREADS = 16


def _definition():
    from . import _definition as d  # noqa: PLC0415 - imports cloudpickle; only when calling

    return d


# --- results ----------------------------------------------------------------------------------------


def remote_exception(output: _transport.Output) -> BaseException:
    """The exception a failed output stands for: the original type with the container's traceback
    as ``__cause__``, or :class:`RemoteError` when it cannot be rebuilt here."""
    text = output.error or ""
    exc: Any = None
    if output.data:
        try:
            exc = _definition().decode_result(output.data)
        except Exception:  # noqa: BLE001 - the type does not exist here: RemoteError below
            exc = None
    if isinstance(exc, BaseException):
        if text:
            exc.__cause__ = RemoteTraceback(text)
        return exc
    if not text:
        text = "the remote function failed, and neither its exception nor its traceback arrived"
    return RemoteError(text)


def output_error(output: _transport.Output, name: str) -> BaseException:
    status = output.status
    if status == "failure":
        return remote_exception(output)
    if status == "timeout":
        return FunctionTimeoutError(output.error or f"{name} timed out")
    if status == "cancelled":
        return InputCancellation(output.error or f"the call of {name} was cancelled")
    if status == "internal_error":
        return ExecutionError(output.error or f"{name} failed in its container")
    return InternalError(f"{name} returned an output with the unexpected status {status!r}")


def output_value(output: _transport.Output, name: str) -> Any:
    """The value of a success or generator item; raises what any other output stands for."""
    if output.status in ("success", "generator_item"):
        try:
            return _definition().decode_result(output.data)
        except Exception as e:
            raise DeserializationError(
                f"the result of {name} cannot be unpickled here ({type(e).__name__}: {e}); are "
                "the local and container Python environments the same?"
            ) from e
    raise output_error(output, name)


def encode_args(name: str, method: Optional[str], args: Sequence[Any], kwargs: Dict[str, Any]) -> bytes:
    try:
        return _definition().encode_args(method, tuple(args), dict(kwargs))
    except Exception as e:
        raise SerializationError(
            f"the arguments of {name} cannot be pickled: {type(e).__name__}: {e}"
        ) from e


# --- handles ----------------------------------------------------------------------------------------


def stable_digest(value: Any) -> str:
    """A short digest of plain data that is the same in every process (names of class instances
    with constructor arguments)."""
    import hashlib  # noqa: PLC0415

    try:
        blob = pickle.dumps(value, protocol=4)
    except Exception:  # noqa: BLE001 - not plain data: cloudpickle is stable within a process
        blob = _definition().encode_result(value)
    return hashlib.sha256(blob).hexdigest()[:10]


class _Handle:
    """One server-side function: registered by an app of this process (``app`` and ``raw``), or
    looked up by name (``app_name``). A handle derived from ``base`` (a class instance with
    constructor arguments, a ``with_options`` variant) is registered with the app when created
    before it starts, else looked up by its name, else derived on the server."""

    def __init__(
        self,
        tag: str,
        *,
        kind: str = "function",
        app: Optional["App"] = None,
        app_name: Optional[str] = None,
        raw: Any = None,
        options: Optional[_options.Options] = None,
        constructor: Optional[Tuple[Tuple, Dict[str, Any]]] = None,
        base: Optional["_Handle"] = None,
        spec_overrides: Optional[Dict[str, Any]] = None,
    ):
        self.tag = tag
        self.kind = kind
        self.app = app
        self.app_name = app_name
        self.raw = raw
        self.options = options or _options.Options()
        self.constructor = constructor
        self.base = base
        self.spec_overrides = dict(spec_overrides or {})
        self.ref: Optional[_transport.FunctionRef] = None
        self.transport: Optional[_transport.Transport] = None
        #: The decorator's result (a ``@shoal.concurrent`` above ``@app.function`` marks it).
        self.wrapper: Any = base.wrapper if base is not None else None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<_Handle {self.tag} {self.ref.function_id if self.ref else 'unresolved'}>"

    @property
    def is_class(self) -> bool:
        return self.kind == "class"

    # --- registration (App) ---

    def definition(self, module_name: Optional[str] = None) -> bytes:
        d = _definition()
        serialized = self.options.serialized
        if self.kind == "class":
            args, kwargs = self.constructor or ((), {})
            return d.make_class_definition(
                self.raw, serialized=serialized, constructor_args=args,
                constructor_kwargs=kwargs, module_name=module_name,
            )
        return d.make_function_definition(self.raw, serialized=serialized, module_name=module_name)

    def is_generator(self) -> bool:
        if self.kind == "class" or self.raw is None:
            return bool(self.ref and self.ref.is_generator)
        from . import _partial  # noqa: PLC0415

        fn = _partial.unwrap(self.raw)
        return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)

    def spec(self, module_name: Optional[str] = None) -> Dict[str, Any]:
        concurrency = _options.concurrency_of(self.wrapper, self.raw)
        options = self.options
        if concurrency and options.max_inputs is None:
            options = options.replace(
                max_inputs=concurrency.get("max_inputs"), target_inputs=concurrency.get("target_inputs")
            )
        return options.spec(
            name=self.tag,
            definition=self.definition(module_name),
            is_class=self.is_class,
            is_generator=self.is_generator(),
        )

    def hydrate(self, transport: _transport.Transport, ref: _transport.FunctionRef) -> None:
        with self._lock:
            self.transport, self.ref = transport, ref

    def dehydrate(self) -> None:
        with self._lock:
            self.transport, self.ref = None, None

    # --- resolution ---

    def resolve(self) -> Tuple[_transport.Transport, _transport.FunctionRef]:
        with self._lock:
            if self.ref is not None and self.transport is not None:
                return self.transport, self.ref
        transport = _transport.current()
        if transport.kind == "guest":
            ref = self._resolve_in_container(transport)
        else:
            ref = self._resolve_on_host(transport)
        self.hydrate(transport, ref)
        return transport, ref

    def _app_name(self) -> str:
        if self.app_name:
            return self.app_name
        if _transport.in_container():
            # The container's own app by id: it may be ephemeral (no name lookup) or share its
            # name with a deployed app.
            name = os.environ.get("SHOAL_APP_ID") or os.environ.get("SHOAL_APP_NAME")
            if name:
                return name
        if self.app is not None and self.app.name:
            return self.app.name
        raise InvalidError(f"{self.tag}: the app it belongs to has no name")

    def _resolve_in_container(self, transport: _transport.Transport) -> _transport.FunctionRef:
        app_name = self._app_name()
        try:
            return transport.lookup(app_name, self.tag)
        except NotFoundError:
            if self.base is None:
                raise
        # A derived handle that was not registered when the app started.
        base_transport, base_ref = self.base.resolve()
        return base_transport.derive(base_ref.function_id, self.tag, self._overrides(base_ref))

    def _resolve_on_host(self, transport: _transport.Transport) -> _transport.FunctionRef:
        if self.app is not None and self.app_name is None:
            app = self.app
            if not app._is_live():
                raise InvalidError(
                    f"{self.tag} is not running: call it inside `with app.run():`, from a "
                    "local_entrypoint started by `shoal run`, or after app.deploy() (another "
                    f"process uses shoal.Function.from_name({app.name or 'APP'!r}, {self.tag!r}))"
                )
            if self.base is None:
                raise InternalError(f"{self.tag} was not registered when its app started")
            base_transport, base_ref = self.base.resolve()
            return base_transport.derive(base_ref.function_id, self.tag, self._overrides(base_ref))
        try:
            return transport.lookup(self._app_name(), self.tag)
        except NotFoundError:
            if self.base is None:
                raise
        base_transport, base_ref = self.base.resolve()
        return base_transport.derive(base_ref.function_id, self.tag, self._overrides(base_ref))

    def _overrides(self, base_ref: _transport.FunctionRef) -> Dict[str, Any]:
        overrides = dict(self.spec_overrides)
        if self.constructor is not None:
            if self.raw is not None:
                overrides["definition"] = self.definition()
            elif base_ref.definition is not None:
                overrides["definition"] = with_constructor(base_ref.definition, self.constructor)
            else:
                raise InvalidError(
                    f"{self.tag}: the definition of {base_ref.name} is not available here, so "
                    "its constructor arguments cannot be bound"
                )
        return overrides

    # --- derived handles ---

    def instance(self, args: Tuple, kwargs: Dict[str, Any]) -> "_Handle":
        """The handle of a class instance with constructor arguments (same name in every
        process: the class name and a digest of the arguments)."""
        tag = f"{self.tag}-{stable_digest((tuple(args), sorted(kwargs.items())))}"
        return _Handle(
            tag, kind="class", app=self.app, app_name=self.app_name, raw=self.raw,
            options=self.options, constructor=(tuple(args), dict(kwargs)), base=self,
        )

    def variant(self, options: _options.Options, overrides: Dict[str, Any]) -> "_Handle":
        tag = f"{self.tag}-{options.digest(self.options)}" if options != self.options else self.tag
        return _Handle(
            tag, kind=self.kind, app=self.app, app_name=self.app_name, raw=self.raw,
            options=options, constructor=self.constructor, base=self, spec_overrides=overrides,
        )


def with_constructor(definition: bytes, constructor: Tuple[Tuple, Dict[str, Any]]) -> bytes:
    """A class definition (``shoal._definition``'s pickled dict of builtins) bound to other
    constructor arguments, without importing the user's code."""
    d = pickle.loads(definition)
    args, kwargs = constructor
    d["constructor"] = _definition().encode_result((tuple(args), dict(kwargs)))
    return pickle.dumps(d, protocol=4)


# --- Function ---------------------------------------------------------------------------------------


def _input_tuples(iterators: Sequence[Iterable[Any]], kwargs: Dict[str, Any]) -> Iterator[Tuple[Tuple, Dict]]:
    for args in zip(*iterators):
        yield tuple(args), kwargs


def _star_tuples(iterator: Iterable[Any], kwargs: Dict[str, Any]) -> Iterator[Tuple[Tuple, Dict]]:
    for args in iterator:
        yield tuple(args), kwargs


async def _materialize(iterators: Sequence[Any]) -> List[Any]:
    """``map.aio`` accepts async iterables; they are read here, on the loop."""
    out = []
    for it in iterators:
        if hasattr(it, "__aiter__"):
            out.append([x async for x in it])
        else:
            out.append(it)
    return out


async def _map_aio(self: "Function", *input_iterators: Any, **kw: Any) -> Any:
    """``map.aio``: like ``map``, and the inputs may be async iterables."""
    iterators = await _materialize(input_iterators)
    async for item in _aio.iterate_in_thread(lambda: self.map(*iterators, **kw)):
        yield item


async def _starmap_aio(self: "Function", input_iterator: Any, **kw: Any) -> Any:
    (inputs,) = await _materialize([input_iterator])
    async for item in _aio.iterate_in_thread(lambda: self.starmap(inputs, **kw)):
        yield item


class Function:
    """A function that runs in containers: ``f.remote(x)``, ``f.map(xs)``, ``f.spawn(x)``...

    Made by ``@app.function()``, ``Function.from_name(app, name)``, or (for the methods of a
    class) ``Model().method``."""

    def __init__(
        self,
        handle: _Handle,
        *,
        method: Optional[str] = None,
        raw: Any = None,
        local: Optional[Callable[..., Any]] = None,
        is_generator: Optional[bool] = None,
        name: Optional[str] = None,
    ):
        self._handle = handle
        self._method = method
        self._raw = raw
        self._local = local
        self._is_generator_hint = is_generator
        self._name = name or (f"{handle.tag}.{method}" if method else handle.tag)
        if raw is not None:
            # The container imports the module and follows this to the user's function.
            self.__shoal_raw__ = raw
            for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
                try:
                    setattr(self, attr, getattr(raw, attr))
                except AttributeError:
                    pass

    def __repr__(self) -> str:
        return f"<shoal.Function {self._name}>"

    def __reduce__(self) -> Any:
        # Passed as an argument or returned: travels by name, looked up again on the other side.
        handle = self._handle
        app_name = (handle.ref.app_name if handle.ref else None) or handle.app_name
        if not app_name and handle.app is not None:
            app_name = os.environ.get("SHOAL_APP_NAME") if _transport.in_container() else None
            if not app_name and handle.app._is_live():
                info = handle.app._running.info if handle.app._running else handle.app._deployed
                app_name = (info or {}).get("name")
        if not app_name:
            raise SerializationError(
                f"{self._name} cannot be pickled before its app runs or is deployed (it is sent "
                "by name)"
            )
        name = f"{handle.tag}.{self._method}" if self._method else handle.tag
        return (_function_by_name, (app_name, name))

    # --- identity ---

    @property
    def object_id(self) -> Optional[str]:
        """The function id ("fu-...") once known."""
        ref = self._handle.ref
        return ref.function_id if ref else None

    @property
    def tag(self) -> str:
        return self._handle.tag

    @property
    def app(self) -> Optional["App"]:
        return self._handle.app

    @property
    def is_generator(self) -> bool:
        if self._is_generator_hint is not None:
            return self._is_generator_hint
        if self._method is None and self._handle.raw is not None:
            return self._handle.is_generator()
        _, ref = self._handle.resolve()
        if self._method is None:
            return ref.is_generator
        return _method_is_generator(ref, self._method)

    def get_raw_f(self) -> Callable[..., Any]:
        if self._raw is None:
            raise InvalidError(f"{self._name} was looked up by name and has no local code")
        return self._raw

    def _resolve(self) -> Tuple[_transport.Transport, str]:
        transport, ref = self._handle.resolve()
        return transport, ref.function_id

    def _args(self, args: Sequence[Any], kwargs: Dict[str, Any]) -> bytes:
        return encode_args(self._name, self._method, args, kwargs)

    # --- constructors ---

    @_aio.StaticMethod
    def from_name(cls, app_name: str, name: str, *, environment_name: Optional[str] = None) -> "Function":
        """A deployed function, looked up lazily (on first use). ``name`` may be "Cls.method"."""
        del environment_name  # the token decides the environment
        _check_name("Function.from_name", app_name, name)
        if "." in name:
            cls_name, _, method = name.partition(".")
            handle = _Handle(cls_name, kind="class", app_name=app_name)
            return cls(handle, method=method)
        return cls(_Handle(name, app_name=app_name))

    @_aio.StaticMethod
    def lookup(cls, app_name: str, name: str, *, environment_name: Optional[str] = None) -> "Function":
        """Deprecated: ``Function.from_name``; looks the function up right away."""
        _options.deprecated("Function.lookup()", "Function.from_name()", stacklevel=3)
        function = Function.from_name(app_name, name, environment_name=environment_name)
        function.hydrate()
        return function

    def hydrate(self) -> "Function":
        """Resolves the function id now (raises NotFoundError if it does not exist)."""
        self._resolve()
        return self

    def with_options(self, **options: Any) -> "Function":
        """A copy with other options (``timeout=``, ``retries=``, ``max_containers=``...).

        Registered with its app when made before the app starts (module level); a variant of a
        running or deployed app needs server support that is not there yet (docs/sdk.md)."""
        if self._method is not None:
            raise InvalidError(
                f"{self._name}.with_options(): set options on the class (Model.with_options(...))"
            )
        handle = self._handle
        new_options = _options.build("with_options", handle.options, stacklevel=3, **options)
        if new_options == handle.options:
            return self
        variant = handle.variant(new_options, _spec_overrides(new_options, options))
        if handle.app is not None:
            handle.app._register_variant(variant)
        return Function(variant, raw=self._raw, local=self._local, is_generator=self._is_generator_hint)

    # --- calls ---

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.local(*args, **kwargs)

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the function here, in this process."""
        target = self._local or self._raw
        if target is None:
            raise InvalidError(f"{self._name} was looked up by name and has no local code to run")
        return target(*args, **kwargs)

    @_aio.method
    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the function in a container and returns its result (or raises its exception)."""
        transport, function_id = self._resolve()
        if self.is_generator:
            raise InvalidError(
                f"{self._name} is a generator function: call it with .remote_gen(...), not .remote(...)"
            )
        output = transport.call(function_id, self._args(args, kwargs))
        return output_value(output, self._name)

    @_aio.method(iterator=True)
    def remote_gen(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Runs a generator function in a container and yields its items as they come."""
        transport, function_id = self._resolve()
        if not self.is_generator:
            raise InvalidError(f"{self._name} is not a generator function: call it with .remote(...)")
        if transport.kind == "guest":
            raise InvalidError(
                f"{self._name}.remote_gen(): generator calls from inside a container are not "
                "supported yet"
            )
        return self._stream_generator(transport, function_id, self._args(args, kwargs))

    def _stream_generator(self, transport: _transport.Transport, function_id: str, args: bytes) -> Iterator[Any]:
        stream = transport.map(function_id)
        finished = False
        try:
            stream.push([(0, args)])
            stream.close()
            while True:
                outputs, done = stream.poll(POLL_S)
                for output in outputs:
                    if output.status == "generator_item":
                        yield output_value(output, self._name)
                    elif output.status in ("generator_done", "success"):
                        finished = True
                        return
                    else:
                        finished = True
                        raise output_error(output, self._name)
                if done:
                    finished = True
                    return
        finally:
            if not finished:
                _quietly(stream.cancel)

    @_aio.method(iterator=True, aio=_map_aio)
    def map(
        self,
        *input_iterators: Iterable[Any],
        kwargs: Optional[Dict[str, Any]] = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> Iterator[Any]:
        """Runs the function once per input (``f.map(xs, ys)`` calls ``f(x, y)`` for each pair)
        and yields the results: in input order, or as they finish with ``order_outputs=False``.
        A failed input raises its exception, or is yielded as the exception object with
        ``return_exceptions=True``."""
        if not input_iterators:
            raise InvalidError(f"{self._name}.map() needs at least one input iterator")
        return self._map(_input_tuples(input_iterators, dict(kwargs or {})), order_outputs, return_exceptions)

    @_aio.method(iterator=True, aio=_starmap_aio)
    def starmap(
        self,
        input_iterator: Iterable[Sequence[Any]],
        *,
        kwargs: Optional[Dict[str, Any]] = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> Iterator[Any]:
        """Like :meth:`map`, with each input a tuple of arguments: ``f.starmap([(1, 2), (3, 4)])``."""
        return self._map(_star_tuples(input_iterator, dict(kwargs or {})), order_outputs, return_exceptions)

    @_aio.method
    def for_each(
        self,
        *input_iterators: Iterable[Any],
        kwargs: Optional[Dict[str, Any]] = None,
        ignore_exceptions: bool = False,
    ) -> None:
        """Like :meth:`map`, for the side effects only: waits for every input, returns None."""
        for _ in self._map(
            _input_tuples(input_iterators, dict(kwargs or {})), False, ignore_exceptions
        ):
            pass

    @_aio.method
    def spawn(self, *args: Any, **kwargs: Any) -> "FunctionCall":
        """Starts the function without waiting; the call is durable (it survives a daemon
        restart) and its result is kept for 7 days: ``FunctionCall.get()``."""
        transport, function_id = self._resolve()
        if self.is_generator:
            raise InvalidError(f"{self._name} is a generator function and cannot be spawned")
        call_id = transport.spawn(function_id, self._args(args, kwargs))
        return FunctionCall(call_id, transport=transport, name=self._name)

    @_aio.method
    def spawn_map(
        self, *input_iterators: Iterable[Any], kwargs: Optional[Dict[str, Any]] = None
    ) -> List["FunctionCall"]:
        """Spawns one call per input and returns their FunctionCalls (in input order) as soon as
        every input is stored."""
        transport, function_id = self._resolve()
        if self.is_generator:
            raise InvalidError(f"{self._name} is a generator function and cannot be spawned")
        payloads = [self._args(a, k) for a, k in _input_tuples(input_iterators, dict(kwargs or {}))]
        with concurrent.futures.ThreadPoolExecutor(SPAWN_MAP_THREADS, "shoal-spawn") as pool:
            ids = list(pool.map(lambda p: transport.spawn(function_id, p), payloads))
        return [FunctionCall(i, transport=transport, name=self._name) for i in ids]

    def _map(
        self, inputs: Iterator[Tuple[Tuple, Dict]], order_outputs: bool, return_exceptions: bool
    ) -> Iterator[Any]:
        transport, function_id = self._resolve()
        if self.is_generator:
            raise InvalidError(f"{self._name} is a generator function: .map() needs a plain function")
        return _MapRun(self, transport, function_id, inputs, order_outputs, return_exceptions).results()


def _function_by_name(app_name: str, name: str) -> Function:
    """What a pickled Function becomes (module level, so plain pickle finds it)."""
    return Function.from_name(app_name, name)


def _method_is_generator(ref: _transport.FunctionRef, method: str) -> bool:
    if ref.definition is None:
        return False
    try:
        definition = _definition().load_definition(ref.definition)
    except ValueError:
        return False
    return bool(definition.methods.get(method, {}).get("is_generator", False))


def _spec_overrides(options: _options.Options, given: Dict[str, Any]) -> Dict[str, Any]:
    """The FunctionSpec fields a ``with_options`` call changes (for a server-side variant)."""
    spec = options.spec(name="", definition=b"")
    keys = set()
    for name in given:
        name = _options.ALIASES.get(name, name)
        keys.update(_SPEC_KEYS.get(name, ()))
    return {k: spec[k] for k in sorted(keys)}


_SPEC_KEYS = {
    "timeout": ("timeout_ms",),
    "retries": ("max_retries", "retry_initial_delay_ms", "retry_backoff_coefficient", "retry_max_delay_ms"),
    "min_containers": ("min_containers",),
    "max_containers": ("max_containers",),
    "buffer_containers": ("buffer_containers",),
    "scaledown_window": ("scaledown_window_ms",),
    "allow_concurrent_inputs": ("max_inputs",),
    "max_inputs": ("max_inputs",),
    "cpu": ("cpu_millis",),
    "memory": ("memory_mb",),
    "image": ("image", "files"),
    "secrets": ("env",),
    "env": ("env",),
}


def _check_name(caller: str, app_name: Any, name: Any) -> None:
    for what, value in (("app name", app_name), ("name", name)):
        if not isinstance(value, str) or not value:
            raise InvalidError(f"{caller}(): the {what} must be a non-empty str, not {value!r}")


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - best effort clean-up of an abandoned call
        pass


class _MapRun:
    """One ``map``: a feeder thread pushes the inputs (``push`` blocks when the server is
    behind) while the caller's thread polls for outputs."""

    def __init__(self, function: Function, transport: _transport.Transport, function_id: str,
                 inputs: Iterator[Tuple[Tuple, Dict]], order_outputs: bool, return_exceptions: bool):
        self.function = function
        self.name = function._name
        self.transport = transport
        self.function_id = function_id
        self.stream: Optional[_transport.MapStream] = None
        self.inputs = inputs
        self.order_outputs = order_outputs
        self.return_exceptions = return_exceptions
        self.total: Optional[int] = None
        self.feed_error: Optional[BaseException] = None
        self.stop = threading.Event()
        self.feeder = threading.Thread(target=self._feed, name="shoal-map-feed", daemon=True)

    def _feed(self) -> None:
        count = 0
        try:
            batch: List[Tuple[int, bytes]] = []
            size = 0
            for args, kwargs in self.inputs:
                if self.stop.is_set():
                    return
                payload = self.function._args(args, kwargs)
                batch.append((count, payload))
                count += 1
                size += len(payload)
                if len(batch) >= MAP_BATCH_INPUTS or size >= MAP_BATCH_BYTES:
                    self.stream.push(batch)
                    batch, size = [], 0
            if batch and not self.stop.is_set():
                self.stream.push(batch)
            self.total = count
            self.stream.close()
        except BaseException as e:  # noqa: B902 - reported by the caller's thread
            if not self.stop.is_set():
                self.feed_error = e

    def results(self) -> Iterator[Any]:
        self.stream = self.transport.map(self.function_id)
        self.feeder.start()
        finished = False
        buffered: Dict[int, Any] = {}
        next_index = 0
        seen = 0
        try:
            while True:
                if self.feed_error is not None:
                    raise self.feed_error
                outputs, done = self.stream.poll(POLL_S)
                for output in outputs:
                    if not output.final:
                        continue
                    seen += 1
                    if output.status == "success":
                        value = output_value(output, self.name)
                    else:
                        value = output_error(output, self.name)
                        if not self.return_exceptions:
                            raise value
                    if not self.order_outputs:
                        yield value
                        continue
                    buffered[output.index] = value
                    while next_index in buffered:
                        yield buffered.pop(next_index)
                        next_index += 1
                if done:
                    self.feeder.join()
                    if self.feed_error is not None:
                        raise self.feed_error
                    if self.total is not None and seen < self.total:
                        raise InternalError(
                            f"{self.name}.map(): the server finished the call after "
                            f"{seen} of {self.total} outputs"
                        )
                    for index in sorted(buffered):  # only if indices were not dense
                        yield buffered.pop(index)
                    finished = True
                    return
        finally:
            if not finished:
                self.stop.set()
                _quietly(self.stream.cancel)


# --- FunctionCall -------------------------------------------------------------------------------------


class FunctionCall:
    """A spawned call: ``.get()`` its result, ``.cancel()`` it, or pass its ``object_id`` to
    another process that uses ``FunctionCall.from_id(id)``."""

    def __init__(self, call_id: str, *, transport: Optional[_transport.Transport] = None,
                 name: Optional[str] = None):
        if not isinstance(call_id, str) or not call_id:
            raise InvalidError(f"a function call id must be a non-empty str, not {call_id!r}")
        self._call_id = call_id
        self._transport = transport
        self._name = name or call_id

    def __repr__(self) -> str:
        return f"<shoal.FunctionCall {self._call_id}>"

    def __reduce__(self) -> Any:
        return (FunctionCall, (self._call_id,))

    @property
    def object_id(self) -> str:
        return self._call_id

    @staticmethod
    def from_id(function_call_id: str) -> "FunctionCall":
        return FunctionCall(function_call_id)

    def _t(self) -> _transport.Transport:
        if self._transport is None:
            self._transport = _transport.current()
        return self._transport

    @_aio.method
    def get(self, timeout: Optional[float] = None) -> Any:
        """Waits for the result (forever when ``timeout`` is None); ``timeout=0`` looks once.
        Raises ``TimeoutError`` if the call has not finished in time; the call keeps running."""
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise InvalidError(f"FunctionCall.get(timeout={timeout!r}): must be None or a number >= 0")
        transport = self._t()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is None:
                wait = GET_CHUNK_S
            else:
                wait = max(0.0, min(GET_CHUNK_S, deadline - time.monotonic()))
            outputs, done = transport.get_outputs(self._call_id, wait)
            final = [o for o in outputs if o.final]
            if done or final:
                if not final:
                    raise InternalError(f"the call {self._call_id} finished without an output")
                return output_value(final[0], self._name)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"the call {self._call_id} has not finished"
                    + (f" within {timeout} s" if timeout else " yet")
                )

    @_aio.method
    def cancel(self, terminate_containers: bool = False) -> None:
        """Cancels the call; ``get()`` then raises ``InputCancellation``."""
        del terminate_containers  # the scheduler decides (a running input's container is killed)
        self._t().cancel(self._call_id)

    @staticmethod
    def _gather(*calls: "FunctionCall") -> List[Any]:
        return [call.get() for call in calls]

    gather = _aio.StaticMethod(lambda cls, *calls: FunctionCall._gather(*calls))
    gather.__doc__ = "Waits for every call and returns their results in order (``gather.aio`` too)."
