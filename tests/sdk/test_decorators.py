"""Decorators and the FunctionSpec they produce: options in user units become wire units, the
2023 aliases warn and map onto the current names, invalid values are refused with the value
named, and class instances / with_options variants are registered with the app."""

from __future__ import annotations

import pickle
import warnings

import pytest

import shoal
from shoal import _definition
from shoal.exception import InvalidError


def spec_of(function) -> dict:
    return function._handle.spec()


def test_default_spec_matches_the_schema_defaults():
    app = shoal.App("d")

    @app.function()
    def f(x):
        return x

    spec = spec_of(f)
    assert spec["name"] == "f" and spec["is_class"] is False and spec["is_generator"] is False
    assert spec["timeout_ms"] == 300_000 and spec["max_retries"] == 0
    assert spec["scaledown_window_ms"] == 60_000 and spec["max_inputs"] == 1
    assert spec["min_containers"] == 0 and spec["max_containers"] == 0 and spec["buffer_containers"] == 0
    assert spec["cpu_millis"] == 0 and spec["memory_mb"] == 0 and spec["image"] == "" and spec["env"] == {}
    definition = _definition.load_definition(spec["definition"])
    assert definition.kind == "function" and definition.qualname.endswith("<locals>.f")
    assert definition.serialized, "a function defined inside another is shipped pickled"


def test_options_are_converted_to_wire_units():
    app = shoal.App("d")

    @app.function(timeout=2.5, cpu=0.5, memory=(128, 256), min_containers=1, max_containers=3,
                  buffer_containers=2, scaledown_window=2, env={"A": "1"})
    def f():
        pass

    spec = spec_of(f)
    assert spec["timeout_ms"] == 2500 and spec["cpu_millis"] == 500 and spec["memory_mb"] == 256
    assert (spec["min_containers"], spec["max_containers"], spec["buffer_containers"]) == (1, 3, 2)
    assert spec["scaledown_window_ms"] == 2000 and spec["env"] == {"A": "1"}


def test_retries_int_means_fixed_one_second_delay():
    app = shoal.App("d")

    @app.function(retries=3)
    def f():
        pass

    spec = spec_of(f)
    assert spec["max_retries"] == 3
    assert spec["retry_initial_delay_ms"] == 1000 and spec["retry_backoff_coefficient"] == 1.0


def test_retries_object_sets_exponential_backoff():
    app = shoal.App("d")
    retries = shoal.Retries(max_retries=4, backoff_coefficient=3.0, initial_delay=0.5, max_delay=10)

    @app.function(retries=retries)
    def f():
        pass

    spec = spec_of(f)
    assert spec["max_retries"] == 4 and spec["retry_backoff_coefficient"] == 3.0
    assert spec["retry_initial_delay_ms"] == 500 and spec["retry_max_delay_ms"] == 10_000
    assert [retries.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 10.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_retries": -1}, "max_retries=-1"),
        ({"max_retries": 2, "backoff_coefficient": 0.5}, "backoff_coefficient=0.5"),
        ({"max_retries": 2, "initial_delay": -1}, "initial_delay=-1"),
        ({"max_retries": 2, "initial_delay": 5, "max_delay": 1}, "max_delay=1"),
    ],
)
def test_invalid_retries_are_refused(kwargs, message):
    with pytest.raises(InvalidError, match=message):
        shoal.Retries(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"timeout": 0}, "timeout=0"),
        ({"timeout": "10"}, "timeout='10'"),
        ({"memory": -5}, "memory=-5"),
        ({"memory": 1.5}, "memory=1.5"),
        ({"cpu": 0}, "cpu=0"),
        ({"max_containers": 0}, "max_containers=0"),
        ({"min_containers": -1}, "min_containers=-1"),
        ({"min_containers": 3, "max_containers": 2}, "min_containers=3 is more than max_containers=2"),
        ({"retries": -1}, "retries=-1"),
        ({"retries": "3"}, "retries='3'"),
        ({"scaledown_window": 0}, "scaledown_window=0"),
        ({"gpu": 3}, "gpu=3"),
        ({"volumes": {"relative": object()}}, "must be absolute"),
    ],
)
def test_invalid_option_values_raise_invalid_error_naming_the_value(kwargs, message):
    app = shoal.App("d")
    with pytest.raises(InvalidError) as info:
        app.function(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "old, new, value, key, wire",
    [
        ("keep_warm", "min_containers", 2, "min_containers", 2),
        ("concurrency_limit", "max_containers", 5, "max_containers", 5),
        ("container_idle_timeout", "scaledown_window", 30, "scaledown_window_ms", 30_000),
        ("allow_concurrent_inputs", "shoal.concurrent", 8, "max_inputs", 8),
    ],
)
def test_2023_aliases_warn_and_set_the_current_option(old, new, value, key, wire):
    app = shoal.App("d")
    with pytest.warns(DeprecationWarning, match=f"{old}= is deprecated") as record:
        decorator = app.function(**{old: value})
    assert new in str(record[0].message)
    assert record[0].filename == __file__, "the warning points at the user's line"

    @decorator
    def f():
        pass

    assert spec_of(f)[key] == wire


def test_an_alias_and_its_current_name_with_different_values_are_refused():
    app = shoal.App("d")
    with pytest.warns(DeprecationWarning), pytest.raises(InvalidError, match="not both"):
        app.function(keep_warm=1, min_containers=2)


def test_accepted_but_unsupported_options_are_stored_and_noted():
    app = shoal.App("d")

    @app.function(gpu="A100", region="eu", cloud="aws", schedule=object(), volumes={"/data": object()})
    def f():
        pass

    options = f._handle.options
    assert options.gpu == "A100" and options.region == "eu" and options.cloud == "aws"
    notes = app._notes([f._handle])
    assert notes and all(k in notes[0] for k in ("gpu=", "region=", "cloud=", "schedule=", "volumes="))


def test_shoal_concurrent_sets_max_inputs_whichever_side_of_app_function_it_is_on():
    app = shoal.App("d")

    @app.function()
    @shoal.concurrent(max_inputs=10, target_inputs=4)
    def inner():
        pass

    @shoal.concurrent(max_inputs=7)
    @app.function()
    def outer():
        pass

    assert spec_of(inner)["max_inputs"] == 10
    assert spec_of(outer)["max_inputs"] == 7
    with pytest.raises(ValueError, match="max_inputs=0"):
        shoal.concurrent(max_inputs=0)


def test_app_defaults_apply_to_its_functions_and_can_be_overridden():
    app = shoal.App("d", image="img-1", secrets=[{"TOKEN": "x"}])

    @app.function()
    def f():
        pass

    @app.function(image="img-2", secrets=[{"OTHER": "y"}])
    def g():
        pass

    assert spec_of(f)["image"] == "img-1" and spec_of(f)["env"] == {"TOKEN": "x"}
    # secrets merge: the app's first, then the function's (later wins)
    assert spec_of(g)["image"] == "img-2" and spec_of(g)["env"] == {"TOKEN": "x", "OTHER": "y"}


def test_generator_functions_are_marked_in_the_spec():
    app = shoal.App("d")

    @app.function()
    def gen():
        yield 1

    @app.function()
    async def agen():
        yield 1

    assert spec_of(gen)["is_generator"] and spec_of(agen)["is_generator"]
    assert gen.is_generator


def test_app_function_without_parentheses_and_the_wrapper_attributes():
    app = shoal.App("d")

    @app.function
    def plain(x):
        """Doc."""
        return x

    assert isinstance(plain, shoal.Function) and plain.__name__ == "plain" and plain.__doc__ == "Doc."
    assert plain.__shoal_raw__(3) == 3
    assert app.registered_functions == {"plain": plain}
    with pytest.raises(InvalidError, match="use @app.cls"):
        app.function()(type("K", (), {}))


def test_serialized_true_ships_a_pickled_function():
    app = shoal.App("d")

    @app.function(serialized=True)
    def f(x):
        return x + 1

    definition = _definition.load_definition(spec_of(f)["definition"])
    assert definition.serialized and definition.load_object()(1) == 2


def test_stub_is_a_deprecated_alias_of_app():
    with pytest.warns(DeprecationWarning, match="Stub is deprecated"):
        stub = shoal.Stub("old")
    assert isinstance(stub, shoal.App) and stub.name == "old"


def test_class_spec_names_the_class_and_carries_its_methods():
    app = shoal.App("d")

    @app.cls(memory=512)
    class Model:
        size: int = shoal.parameter(default=3)

        @shoal.enter()
        def load(self):
            pass

        @shoal.method()
        def predict(self, x):
            return x

        @shoal.method()
        def stream(self):
            yield 1

    spec = Model._handle.spec()
    assert spec["name"] == "Model" and spec["is_class"] and spec["memory_mb"] == 512
    definition = _definition.load_definition(spec["definition"])
    assert definition.kind == "class" and set(definition.methods) == {"predict", "stream"}
    assert definition.constructor() == ((), {})
    assert app.registered_classes == {"Model": Model}


def test_a_class_instance_made_before_the_app_starts_is_registered_with_its_arguments():
    app = shoal.App("d")

    @app.cls()
    class Model:
        size: int = shoal.parameter(default=3)

        @shoal.method()
        def predict(self, x):
            return x

    big = Model(size=5)
    again = Model(size=5)
    handles = {h.tag: h for h in app._handles()}
    assert set(handles) == {"Model", big._handle.tag}
    assert again._handle is big._handle
    definition = _definition.load_definition(handles[big._handle.tag].spec()["definition"])
    assert definition.constructor() == ((), {"size": 5})


def test_a_class_that_needs_arguments_registers_only_its_instances():
    app = shoal.App("d")

    @app.cls()
    class Needs:
        size: int = shoal.parameter()

        @shoal.method()
        def f(self):
            pass

    assert [h.tag for h in app._handles()] == []
    with pytest.raises(TypeError, match="missing the parameter"):
        Needs()
    Needs(size=1)
    assert [h.tag for h in app._handles()] == [Needs(size=1)._handle.tag]


def test_legacy_enter_and_exit_hooks_warn():
    app = shoal.App("d")
    with pytest.warns(DeprecationWarning, match="__enter__ as a container hook is deprecated"):

        @app.cls()
        class Old:
            def __enter__(self):
                pass

            @shoal.method()
            def f(self):
                pass


def test_with_options_before_start_registers_a_variant_with_its_own_spec():
    app = shoal.App("d")

    @app.function(timeout=10)
    def f():
        pass

    quick = f.with_options(timeout=1, retries=2)
    assert quick is not f and quick.tag.startswith("f-") and quick.tag != "f"
    assert f.with_options(timeout=10) is f
    assert quick.tag == f.with_options(timeout=1, retries=2).tag, "variant names are stable"
    specs = {h.tag: h.spec() for h in app._handles()}
    assert specs["f"]["timeout_ms"] == 10_000
    assert specs[quick.tag]["timeout_ms"] == 1000 and specs[quick.tag]["max_retries"] == 2
    with pytest.warns(DeprecationWarning):
        f.with_options(concurrency_limit=2)


def test_definitions_of_main_functions_name_the_module_the_container_imports(tmp_path, monkeypatch):
    # `python app.py` defines functions in __main__; the container imports the file as "app".
    import types

    from shoal import _mount

    main_file = tmp_path / "app.py"
    main_file.write_text("x = 1\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(main_file)
    monkeypatch.setitem(__import__("sys").modules, "__main__", fake_main)
    app = shoal.App("d")

    def f():
        pass

    f.__module__ = "__main__"
    function = app.function()(f)
    shipment = _mount.collect([main_file])
    module = app._module_name_for(function._handle, shipment)
    assert module == "app"
    definition = pickle.loads(function._handle.spec(module)["definition"])
    assert definition["module"] == "app"


def test_local_entrypoint_registers_and_stays_callable():
    app = shoal.App("d")

    @app.local_entrypoint()
    def main(n: int = 1):
        return n * 2

    assert app.registered_entrypoints["main"] is main and main(n=4) == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shoal.App("quiet")  # no warnings for current names
