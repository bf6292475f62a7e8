"""``shoal.App``: a named group of functions and classes, run ephemerally (``app.run()``,
``shoal run``) or deployed (``app.deploy()``, ``shoal deploy``).

Starting an app (``_start``):

1. collect the code to ship (:mod:`shoal._mount`) and upload what shoald lacks;
2. build one ``FunctionSpec`` per registered function, class, pre-registered class instance and
   ``with_options`` variant;
3. ``create_app(name, mode, specs, code)``; hydrate every handle with its function id;
4. ephemeral apps: a daemon thread heartbeats every :data:`HEARTBEAT_S` and a second one streams
   the app's container logs to this terminal, each line prefixed by its container id.

Leaving ``app.run()`` stops an ephemeral app (a detached one keeps running), waits for shoald to
mark the end of the app's output (every container exited, exit hooks included, and its last lines
delivered; at most :data:`LOG_END_TIMEOUT_S`), and un-hydrates the functions. Inside a container
the same module is imported again: decorators only record what they decorate, and nothing
connects until a function is called.
"""

from __future__ import annotations

import functools
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from . import _line_gate, _mount, _options, _transport
from ._cls import Cls, constructible_without_arguments, warn_legacy_hooks
from ._functions import Function, _Handle
from .exception import ConnectionError, InternalError, InvalidError

HEARTBEAT_S = 10.0
LOG_POLL_S = 0.25
#: After stopping an ephemeral app, how long to wait for shoald to end its log stream (its
#: containers get a 5 s grace period to finish their inputs and exit hooks before they are killed).
LOG_END_TIMEOUT_S = 10.0
CHECK = "✓"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class LocalEntrypoint:
    """``@app.local_entrypoint()``: runs on your machine inside ``app.run()`` when the file is
    started with ``shoal run``; its parameters become command-line flags."""

    def __init__(self, fn: Callable[..., Any], app: "App", name: str):
        self.raw_f = fn
        self.app = app
        self.name = name
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.raw_f(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<shoal.LocalEntrypoint {self.name}>"


class _Running:
    def __init__(self, app: "App", mode: str, transport: Any, remote_app: Any, info: Dict[str, Any],
                 show_progress: bool):
        self.app = app
        self.show_progress = show_progress
        self.mode = mode
        self.transport = transport
        self.remote_app = remote_app
        self.info = info
        self.stop = threading.Event()
        self.threads: List[threading.Thread] = []
        self.log_stream: Any = None
        #: Undoes the line gate on sys.stdout/sys.stderr (``_line_gate``) once the logs stop.
        self.ungate: Any = None
        #: Set by the log thread when it stops: the stream ended (or broke), every line is printed.
        self.logs_done = threading.Event()


class _RunContext:
    """What ``app.run()`` returns: a context manager for ``with`` and ``async with``."""

    def __init__(self, app: "App", mode: str, show_progress: bool):
        self._app = app
        self._mode = mode
        self._show = show_progress

    def __enter__(self) -> "App":
        self._app._start(self._mode, show_progress=self._show)
        return self._app

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._app._finish(failed=exc_type is not None)

    async def __aenter__(self) -> "App":
        import asyncio  # noqa: PLC0415

        await asyncio.to_thread(self._app._start, self._mode, show_progress=self._show)
        return self._app

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        import asyncio  # noqa: PLC0415

        await asyncio.to_thread(self._app._finish, failed=exc_type is not None)


class App:
    """A group of functions and classes that start, stop and deploy together.

    ``image``, ``secrets`` and ``volumes`` are defaults for every function of the app."""

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        image: Any = None,
        secrets: Optional[List[Any]] = None,
        volumes: Optional[Dict[str, Any]] = None,
        include_source: Optional[bool] = None,
    ):
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise InvalidError(f"App(name={name!r}): the name must be a non-empty str")
        self._name = name
        self._defaults = _options.build("App", image=image, secrets=secrets, volumes=volumes)
        self._include_source = include_source
        self._functions: Dict[str, Function] = {}
        self._classes: Dict[str, Cls] = {}
        self._entrypoints: Dict[str, LocalEntrypoint] = {}
        self._variants: Dict[str, _Handle] = {}
        self._running: Optional[_Running] = None
        self._deployed: Optional[Dict[str, Any]] = None
        self._entry_file: Optional[Path] = None
        self._last_upload: Optional[_mount.UploadStats] = None
        self._last_refs: List[Dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"<shoal.App {self._name or '(unnamed)'}>"

    # --- introspection ---

    @property
    def name(self) -> Optional[str]:
        return self._name

    @property
    def app_id(self) -> Optional[str]:
        info = self._running.info if self._running else self._deployed
        return info.get("app_id") if info else None

    @property
    def registered_functions(self) -> Dict[str, Function]:
        return dict(self._functions)

    @property
    def registered_classes(self) -> Dict[str, Cls]:
        return dict(self._classes)

    @property
    def registered_entrypoints(self) -> Dict[str, LocalEntrypoint]:
        return dict(self._entrypoints)

    def _is_live(self) -> bool:
        return self._running is not None or self._deployed is not None

    # --- decorators ---

    def function(
        self,
        _warn_parentheses_missing: Any = None,
        *,
        image: Any = None,
        secrets: Optional[List[Any]] = None,
        volumes: Optional[Dict[str, Any]] = None,
        network_file_systems: Optional[Dict[str, Any]] = None,
        cpu: Any = None,
        memory: Any = None,
        gpu: Any = None,
        timeout: Optional[float] = None,
        retries: Any = None,
        min_containers: Optional[int] = None,
        max_containers: Optional[int] = None,
        buffer_containers: Optional[int] = None,
        scaledown_window: Optional[float] = None,
        region: Any = None,
        cloud: Optional[str] = None,
        schedule: Any = None,
        serialized: bool = False,
        name: Optional[str] = None,
        is_generator: Optional[bool] = None,
        env: Optional[Dict[str, str]] = None,
        keep_warm: Optional[int] = None,
        concurrency_limit: Optional[int] = None,
        container_idle_timeout: Optional[float] = None,
        allow_concurrent_inputs: Optional[int] = None,
    ) -> Any:
        """Registers a function: ``@app.function(timeout=60, retries=3)``."""
        options = _options.build(
            "@app.function", self._defaults, stacklevel=3,
            image=image, secrets=secrets, volumes=volumes, network_file_systems=network_file_systems,
            cpu=cpu, memory=memory, gpu=gpu, timeout=timeout, retries=retries,
            min_containers=min_containers, max_containers=max_containers,
            buffer_containers=buffer_containers, scaledown_window=scaledown_window, region=region,
            cloud=cloud, schedule=schedule, serialized=serialized or None, env=env,
            keep_warm=keep_warm, concurrency_limit=concurrency_limit,
            container_idle_timeout=container_idle_timeout,
            allow_concurrent_inputs=allow_concurrent_inputs,
        )

        def decorate(fn: Any) -> Function:
            if isinstance(fn, (Function, Cls)):
                raise InvalidError(f"{fn!r} is decorated twice with @app.function/@app.cls")
            if isinstance(fn, type):
                raise InvalidError(f"@app.function() decorates functions; use @app.cls() for the class {fn.__name__}")
            if not callable(fn):
                raise InvalidError(f"@app.function() decorates functions, not {fn!r}")
            tag = name or getattr(fn, "__name__", None) or repr(fn)
            handle = _Handle(tag, app=self, raw=fn, options=options)
            function = Function(handle, raw=fn, is_generator=is_generator)
            handle.wrapper = function
            self._check_tag(tag)
            self._functions[tag] = function
            return function

        if callable(_warn_parentheses_missing):  # @app.function without ()
            return decorate(_warn_parentheses_missing)
        if _warn_parentheses_missing is not None:
            raise InvalidError("@app.function() takes keyword arguments only")
        return decorate

    def cls(
        self,
        _warn_parentheses_missing: Any = None,
        *,
        image: Any = None,
        secrets: Optional[List[Any]] = None,
        volumes: Optional[Dict[str, Any]] = None,
        network_file_systems: Optional[Dict[str, Any]] = None,
        cpu: Any = None,
        memory: Any = None,
        gpu: Any = None,
        timeout: Optional[float] = None,
        retries: Any = None,
        min_containers: Optional[int] = None,
        max_containers: Optional[int] = None,
        buffer_containers: Optional[int] = None,
        scaledown_window: Optional[float] = None,
        region: Any = None,
        cloud: Optional[str] = None,
        serialized: bool = False,
        env: Optional[Dict[str, str]] = None,
        keep_warm: Optional[int] = None,
        concurrency_limit: Optional[int] = None,
        container_idle_timeout: Optional[float] = None,
        allow_concurrent_inputs: Optional[int] = None,
    ) -> Any:
        """Registers a class whose ``@shoal.method()`` s run in containers."""
        options = _options.build(
            "@app.cls", self._defaults, stacklevel=3,
            image=image, secrets=secrets, volumes=volumes, network_file_systems=network_file_systems,
            cpu=cpu, memory=memory, gpu=gpu, timeout=timeout, retries=retries,
            min_containers=min_containers, max_containers=max_containers,
            buffer_containers=buffer_containers, scaledown_window=scaledown_window, region=region,
            cloud=cloud, serialized=serialized or None, env=env, keep_warm=keep_warm,
            concurrency_limit=concurrency_limit, container_idle_timeout=container_idle_timeout,
            allow_concurrent_inputs=allow_concurrent_inputs,
        )

        def decorate(user_cls: Any) -> Cls:
            if not isinstance(user_cls, type):
                raise InvalidError(f"@app.cls() decorates classes, not {user_cls!r}")
            warn_legacy_hooks(user_cls)
            tag = user_cls.__name__
            handle = _Handle(tag, kind="class", app=self, raw=user_cls, options=options)
            wrapper = Cls(handle, user_cls=user_cls)
            handle.wrapper = wrapper
            self._check_tag(tag)
            self._classes[tag] = wrapper
            return wrapper

        if isinstance(_warn_parentheses_missing, type):
            return decorate(_warn_parentheses_missing)
        if _warn_parentheses_missing is not None:
            raise InvalidError("@app.cls() takes keyword arguments only")
        return decorate

    def local_entrypoint(self, _warn_parentheses_missing: Any = None, *, name: Optional[str] = None) -> Any:
        """Registers the function ``shoal run`` calls on your machine, inside ``app.run()``."""

        def decorate(fn: Callable[..., Any]) -> LocalEntrypoint:
            if not callable(fn):
                raise InvalidError(f"@app.local_entrypoint() decorates functions, not {fn!r}")
            tag = name or fn.__name__
            entry = LocalEntrypoint(fn, self, tag)
            self._entrypoints[tag] = entry
            return entry

        if callable(_warn_parentheses_missing):
            return decorate(_warn_parentheses_missing)
        return decorate

    def _check_tag(self, tag: str) -> None:
        if tag in self._functions or tag in self._classes:
            warnings.warn(
                f"{tag} is registered twice in {self!r}; the later definition replaces the earlier",
                stacklevel=4,
            )
            self._functions.pop(tag, None)
            self._classes.pop(tag, None)

    def _register_variant(self, handle: _Handle) -> None:
        """A class instance or ``with_options`` variant made before the app starts."""
        if self._is_live() or _transport.in_container():
            return  # resolved by name or derived when called
        self._variants.setdefault(handle.tag, handle)

    # --- running ---

    def run(
        self,
        *,
        client: Any = None,
        show_progress: Optional[bool] = None,
        detach: bool = False,
        interactive: bool = False,
        environment_name: Optional[str] = None,
    ) -> _RunContext:
        """``with app.run():`` creates an ephemeral app (stopped when the block ends, or when this
        process goes away) and makes its functions callable; ``detach=True`` keeps it running
        after the block."""
        del interactive, environment_name
        if client is not None:
            _transport.set_host(client if isinstance(client, _transport.Transport) else _transport.NativeTransport(client))
        return _RunContext(self, "detached" if detach else "ephemeral", show_progress is not False)

    def deploy(
        self,
        name: Optional[str] = None,
        *,
        environment_name: Optional[str] = None,
        tag: Optional[str] = None,
        client: Any = None,
        show_progress: Optional[bool] = None,
    ) -> "App":
        """Deploys the app (a new version under its name); its functions stay available to
        ``Function.from_name`` until ``shoal app stop``."""
        del environment_name, tag
        if client is not None:
            _transport.set_host(client if isinstance(client, _transport.Transport) else _transport.NativeTransport(client))
        self._start("deployed", name=name, show_progress=bool(show_progress))
        return self

    def _handles(self) -> List[_Handle]:
        handles: List[_Handle] = [f._handle for f in self._functions.values()]
        for wrapper in self._classes.values():
            if constructible_without_arguments(wrapper._user_cls):
                handles.append(wrapper._handle)
        for variant in self._variants.values():
            if variant.kind == "class" and variant.constructor is None:
                if not constructible_without_arguments(variant.raw):
                    continue
            handles.append(variant)
        return handles

    def _default_name(self) -> str:
        if self._name:
            return self._name
        for path in [self._entry_file, *self._code_files()]:
            if path is not None:
                return Path(path).stem
        return "app"

    def _code_files(self) -> List[Path]:
        files: List[Path] = []
        for handle in self._handles():
            module = getattr(handle.raw, "__module__", None)
            path = _mount.module_file(module) if module else None
            if path is not None and _mount.is_local_file(path) and path not in files:
                files.append(path)
        return files

    def _shipment(self) -> _mount.Shipment:
        files = self._code_files()
        if self._entry_file is not None:
            entry = Path(self._entry_file).resolve()
            files = [entry] + [f for f in files if f != entry]
        return _mount.collect(files)

    def _module_name_for(self, handle: _Handle, shipment: _mount.Shipment) -> Optional[str]:
        """Code defined in ``__main__`` is imported in the container under its path below the
        code root ("app", "pkg.app")."""
        if getattr(handle.raw, "__module__", None) != "__main__":
            return None
        path = _mount.module_file("__main__")
        if path is None:
            return None  # no file: _definition serializes it
        try:
            return _mount.module_name(path, shipment.root)
        except ValueError:
            return None

    def _start(self, mode: str, *, name: Optional[str] = None, show_progress: bool = True) -> Dict[str, Any]:
        if _transport.in_container():
            raise InvalidError("an app cannot be run or deployed from inside a container")
        if self._running is not None:
            raise InvalidError(f"{self!r} is running already")
        transport = _transport.host()
        connection = getattr(transport, "connection", None)
        if connection is None:
            raise InternalError(f"the transport {transport!r} cannot create apps")
        app_name = name or self._default_name()

        shipment = self._shipment()
        stats = _mount.upload(connection, shipment)
        handles = self._handles()
        # Deploying always shows image builds (on stderr): a build can take minutes.
        default_image_id = self._build_images(connection, handles, show_progress or mode == "deployed")
        specs = [h.spec(self._module_name_for(h, shipment)) for h in handles]
        for handle, spec in zip(handles, specs):
            if handle.options.image is None and not spec.get("image"):
                spec["image"] = default_image_id
        remote_app, info, refs = connection.create_app(app_name, mode, specs, shipment.wire())
        by_name = {r.get("name"): r for r in refs}
        for handle in handles:
            ref = by_name.get(handle.tag)
            if ref is None:
                raise InternalError(f"shoald created the app {app_name!r} without the function {handle.tag!r}")
            handle.hydrate(transport, _transport.FunctionRef.from_dict(ref))
        self._last_upload = stats
        self._last_refs = refs
        info = dict(info)

        if show_progress:
            detail = f"{info.get('app_id', '?')}, {mode}"
            if mode == "deployed":
                detail += f", version {info.get('version', '?')}"
            _say(f"{CHECK} Initialized app {info.get('name') or app_name} ({detail})")
            _say(f"{CHECK} {stats.summary()}")
            names = [h.tag for h in handles]
            _say(f"{CHECK} Created {len(names)} function{'s' if len(names) != 1 else ''}: {', '.join(names) or '-'}")
            for note in self._notes(handles):
                _say(f"  note: {note}")

        if mode == "deployed":
            self._deployed = info
            try:
                remote_app.close()  # a deployed app does not depend on this client
            except Exception:  # noqa: BLE001 - the deployment is durable already
                pass
            return info

        running = _Running(self, mode, transport, remote_app, info, show_progress)
        self._running = running
        if mode == "ephemeral":
            self._thread(running, self._heartbeat, "shoal-heartbeat")
        if show_progress:
            running.log_stream = self._open_logs(running)
            if running.log_stream is not None:
                running.ungate = _line_gate.install()
                self._thread(running, self._stream_logs, "shoal-logs")
        return info

    def _build_images(self, connection: Any, handles: List[_Handle], show_progress: bool) -> str:
        """Builds every distinct ``Image`` object the functions use, once each (ids are cached by
        the image per server), and the default image when a function names none; returns the
        default image's id ("" when no function needs it)."""
        from . import image as _image  # noqa: PLC0415

        images: Dict[int, Any] = {}
        users: Dict[int, List[str]] = {}
        default_users: List[str] = []
        for handle in handles:
            candidate = handle.options.image
            if candidate is None:
                default_users.append(handle.tag)
            elif isinstance(candidate, _image.Image):
                images.setdefault(id(candidate), candidate)
                users.setdefault(id(candidate), []).append(handle.tag)
            # else an image id (str) or an object that reports its own id (_shoal_image_id)
        service = _image.service(connection)
        if not service.has_builder() and not images:
            return ""  # an older native extension: functions run in the server's default root fs
        for key, image in images.items():
            image._build(connection, show_progress=show_progress, output=_say, used_by=users[key])
            # copy=False files: read and uploaded at every start (never part of the image).
            shipped = image._ship_local_files(connection)
            if shipped is not None and show_progress:
                count = len(shipped.new) + len(shipped.cached)
                _say(f"{CHECK} Added {count} local file{'s' if count != 1 else ''} ({len(shipped.new)} new, "
                     f"{len(shipped.cached)} cached) for {', '.join(users[key])}, not built into the image "
                     f"(copy=False): {'; '.join(f.label for f in image._local_files)}")
        if not default_users:
            return ""
        return _image.default_image()._build(
            connection, show_progress=show_progress, output=_say, used_by=default_users
        )

    @staticmethod
    def _notes(handles: List[_Handle]) -> List[str]:
        notes = []
        for handle in handles:
            unsupported = handle.options.unsupported()
            if unsupported:
                keys = ", ".join(f"{k}=" for k in sorted(unsupported))
                notes.append(f"{handle.tag}: {keys} accepted but not supported by this server yet")
        return notes

    @staticmethod
    def _thread(running: _Running, target: Callable[[_Running], None], name: str) -> None:
        thread = threading.Thread(target=target, args=(running,), name=name, daemon=True)
        running.threads.append(thread)
        thread.start()

    @staticmethod
    def _heartbeat(running: _Running) -> None:
        warned = False
        while not running.stop.wait(HEARTBEAT_S):
            try:
                running.remote_app.heartbeat()
            except Exception as e:  # noqa: BLE001 - reported once; the server stops the app
                if not warned:
                    _say(f"shoal: heartbeat for the app {running.info.get('name')} failed: {e}")
                    warned = True

    @staticmethod
    def _open_logs(running: _Running) -> Any:
        """Follows the app's logs (before any function runs, so no line is missed); None when
        shoald refuses."""
        name = running.info.get("name") or ""
        try:
            return running.transport.connection.app_logs(name, True)
        except Exception as e:  # noqa: BLE001 - logs are a convenience
            _say(f"shoal: cannot stream the logs of {name}: {e}")
            return None

    @staticmethod
    def _stream_logs(running: _Running) -> None:
        name = running.info.get("name") or ""
        stream = running.log_stream
        try:
            while True:
                lines, done = stream.poll(LOG_POLL_S)
                if lines:
                    print_log_lines(lines)
                if done or running.stop.is_set():
                    return
        except ConnectionError:
            return
        except Exception as e:  # noqa: BLE001
            if not running.stop.is_set():
                _say(f"shoal: stopped streaming the logs of {name}: {e}")
        finally:
            running.logs_done.set()
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass

    @staticmethod
    def _wait_for_last_lines(running: _Running) -> None:
        """After the app was stopped: waits until shoald ends the log stream, which it does once
        every container of the app has exited and its stdout and stderr were delivered to the end
        (lines printed by exit hooks, or after a function returned, included)."""
        stream = running.log_stream
        if stream is None or not getattr(stream, "will_end", False):
            return  # not streaming, or a shoald that never ends a stream: nothing to wait for
        if not running.logs_done.wait(LOG_END_TIMEOUT_S):
            name = running.info.get("name")
            _say(
                f"shoal: the containers of {name} did not finish their output within "
                f"{LOG_END_TIMEOUT_S:g} s of the app stopping; `shoal app logs {name}` shows later lines"
            )

    def _finish(self, *, failed: bool = False) -> None:
        running = self._running
        if running is None:
            return
        try:
            if running.mode == "ephemeral":
                try:
                    running.remote_app.stop()
                except Exception as e:  # noqa: BLE001 - it stops anyway when the app is dropped
                    _say(f"shoal: stopping the app {running.info.get('name')} failed: {e}")
                else:
                    self._wait_for_last_lines(running)
            # A detached app keeps running: its later lines are for `shoal app logs -f`.
            running.stop.set()
            try:
                running.remote_app.close()
            except Exception:  # noqa: BLE001
                pass
            for thread in running.threads:
                thread.join(timeout=2.0)
        finally:
            if running.ungate is not None:
                running.ungate()
            self._running = None
            for handle in self._handles():
                handle.dehydrate()
        if not running.show_progress:
            return
        if running.mode == "detached":
            name = running.info.get("name")
            _say(
                f"{CHECK} App {name} keeps running (detached): `shoal app logs {name} -f` to follow it, "
                f"`shoal app stop {name}` to stop it"
            )
        elif not failed:
            _say(f"{CHECK} App completed.")


def print_log_lines(lines: List[Dict[str, Any]]) -> None:
    for line in lines:
        text = str(line.get("text", "")).rstrip("\n")
        prefix = f"[{line.get('container_id') or 'shoal'}]"
        stream = sys.stdout if int(line.get("stream") or 1) == 1 else sys.stderr
        # Whole lines, never inside a line the user's code is printing (print() writes its
        # arguments one by one; this runs on the log thread): see _line_gate.
        parts = text.split("\n") if text else [""]
        _line_gate.write_lines(stream, "".join(f"{prefix} {part}\n" for part in parts))


class Stub(App):
    """Deprecated name of :class:`App`."""

    def __init__(self, name: Optional[str] = None, **kwargs: Any):
        warnings.warn("shoal.Stub is deprecated; use shoal.App instead", DeprecationWarning, stacklevel=2)
        super().__init__(name, **kwargs)

