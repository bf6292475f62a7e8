"""Definitions and markers shared by the SDK and the guest (shoal._definition, shoal._partial)."""

from __future__ import annotations

import pickle
import sys
import types

import pytest

import shoal._partial as sp
from shoal import _definition as d


def top_level(x):
    return x + 1


def top_gen():
    yield 1


async def top_async():
    return 1


class Wrapper:
    """What an SDK decorator returns: it points at the user's object."""

    def __init__(self, raw):
        self.__shoal_raw__ = raw


def test_a_module_level_function_is_recorded_by_reference():
    defn = d.load_definition(d.make_function_definition(top_level))
    assert (defn.kind, defn.module, defn.qualname, defn.serialized) == (
        "function", __name__, "top_level", False)
    assert defn.object_blob is None
    assert defn.load_object() is top_level


def test_the_definition_is_plain_pickle_of_builtin_types():
    raw = pickle.loads(d.make_function_definition(top_level))
    assert set(raw) == {"version", "kind", "name", "module", "qualname", "serialized", "object",
                        "is_generator", "is_async", "constructor", "methods"}
    assert raw["version"] == 1


def test_generator_and_async_flags_are_detected():
    gen = d.load_definition(d.make_function_definition(top_gen))
    assert (gen.is_generator, gen.is_async) == (True, False)
    coro = d.load_definition(d.make_function_definition(top_async))
    assert (coro.is_generator, coro.is_async) == (False, True)
    forced = d.load_definition(d.make_function_definition(top_level, is_generator=True))
    assert forced.is_generator


def test_a_local_function_is_serialized_and_loads_without_its_module():
    factor = 3

    def local(x):
        return x * factor

    defn = d.load_definition(d.make_function_definition(local))
    assert defn.serialized and defn.object_blob
    assert defn.load_object()(2) == 6


def test_serialized_true_pickles_the_object():
    defn = d.load_definition(d.make_function_definition(top_level, serialized=True))
    assert defn.serialized
    assert defn.load_object()(1) == 2


def test_main_is_recorded_under_the_file_stem(monkeypatch):
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = "/home/user/proj/app.py"
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    f = types.FunctionType(top_level.__code__, {}, "square")
    f.__module__, f.__qualname__ = "__main__", "square"
    defn = d.load_definition(d.make_function_definition(f))
    assert (defn.module, defn.qualname, defn.serialized) == ("app", "square", False)


def test_main_without_a_file_is_serialized(monkeypatch):
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    f = types.FunctionType(top_level.__code__, {}, "square")
    f.__module__, f.__qualname__ = "__main__", "square"
    defn = d.load_definition(d.make_function_definition(f))
    assert defn.serialized and defn.module is None


def test_sdk_wrappers_are_unwrapped_both_ways():
    defn = d.load_definition(d.make_function_definition(Wrapper(top_level)))
    assert defn.qualname == "top_level"
    module = sys.modules[__name__]
    original = module.top_level
    module.top_level = Wrapper(original)  # what the module attribute holds once decorated
    try:
        assert defn.load_object() is original
    finally:
        module.top_level = original


class Model:
    size = sp.parameter(default=3)
    name = sp.parameter()

    @sp.enter()
    def load(self):
        pass

    @sp.exit()
    def close(self):
        pass

    @sp.method()
    def predict(self, x):
        return x

    @sp.method()
    async def astream(self):
        yield 1

    def helper(self):
        pass


class Child(Model):
    @sp.method()
    def predict(self, x):  # overrides: stays one entry, in the base's position
        return -x

    @sp.enter()
    def more(self):
        pass


def test_a_class_definition_carries_methods_and_constructor_arguments():
    defn = d.load_definition(d.make_class_definition(Model, constructor_kwargs={"name": "m"}))
    assert (defn.kind, defn.qualname) == ("class", "Model")
    assert defn.methods == {
        "predict": {"is_generator": False, "is_async": False},
        "astream": {"is_generator": True, "is_async": True},
    }
    assert defn.constructor() == ((), {"name": "m"})
    assert defn.load_object() is Model


def test_markers_are_found_through_bases_in_definition_order():
    assert sp.marked(Child, sp.ENTER) == ["load", "more"]
    assert sp.marked(Child, sp.EXIT) == ["close"]
    assert sp.marked(Child, sp.METHOD) == ["predict", "astream"]


def test_parameters_become_attributes_with_defaults():
    m = sp.instantiate(Model, (), {"name": "m"})
    assert (m.size, m.name) == (3, "m")
    m = sp.instantiate(Model, (), {"name": "m", "size": 5})
    assert m.size == 5


def test_parameters_are_keyword_only_and_checked():
    with pytest.raises(TypeError, match="keyword arguments only"):
        sp.instantiate(Model, (1,), {})
    with pytest.raises(TypeError, match="missing the parameter 'name'"):
        sp.instantiate(Model, (), {})
    with pytest.raises(TypeError, match="unexpected parameter"):
        sp.instantiate(Model, (), {"name": "m", "colour": 1})


def test_a_class_with_its_own_init_is_called_with_the_arguments():
    class WithInit:
        size = sp.parameter(default=1)

        def __init__(self, a, size=2):
            self.a, self.size = a, size

    obj = sp.instantiate(WithInit, (1,), {"size": 4})
    assert (obj.a, obj.size) == (1, 4)


def test_concurrent_validates_and_marks():
    @sp.concurrent(max_inputs=10, target_inputs=4)
    def f():
        pass

    assert f.__shoal_concurrent__ == {"max_inputs": 10, "target_inputs": 4}
    with pytest.raises(ValueError):
        sp.concurrent(max_inputs=0)
    with pytest.raises(ValueError):
        sp.concurrent(max_inputs=2, target_inputs=3)


def test_args_and_results_round_trip():
    blob = d.encode_args("predict", (1, [2]), {"k": "v"})
    assert d.decode_args(blob) == ("predict", (1, [2]), {"k": "v"})
    assert d.decode_args(d.encode_args(None)) == (None, (), {})
    assert d.decode_result(d.encode_result({"a": 1})) == {"a": 1}


def test_an_exception_that_cannot_round_trip_encodes_as_empty():
    class Bad(Exception):
        def __init__(self, a, b):
            super().__init__(a)

    assert d.encode_exception(Bad(1, 2)) == b""
    assert isinstance(d.decode_result(d.encode_exception(ValueError("x"))), ValueError)


def test_a_blob_that_is_not_a_definition_is_a_value_error():
    with pytest.raises(ValueError, match="does not unpickle"):
        d.load_definition(b"garbage")
    with pytest.raises(ValueError, match="version 7"):
        d.load_definition(pickle.dumps({"version": 7}))
