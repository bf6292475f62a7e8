"""Blobs for tests/guest/guest_python_test.cpp, made with the same helpers the SDK uses
(shoal._definition). Binary results go to stdout.

    guest_helper.py function <code_dir> <module> <qualname>          definition of a function
    guest_helper.py ref <module> <qualname>                          same, without importing it
    guest_helper.py class <code_dir> <module> <qualname> <kwargs>    definition of a class
    guest_helper.py args <method or -> <args literal> [<kwargs literal>]
    guest_helper.py decode <file>       repr() of the unpickled value; "Type: message" for errors
"""

import ast
import importlib
import sys
import types

from shoal import _definition as d


def load(code_dir, module, qualname):
    sys.path.insert(0, code_dir)
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def main(argv):
    cmd = argv[0]
    if cmd == "function":
        blob = d.make_function_definition(load(*argv[1:4]))
    elif cmd == "ref":
        fn = types.FunctionType((lambda: None).__code__, {}, argv[2])
        fn.__module__, fn.__qualname__ = argv[1], argv[2]
        blob = d.make_function_definition(fn)
    elif cmd == "class":
        blob = d.make_class_definition(
            load(*argv[1:4]), constructor_kwargs=ast.literal_eval(argv[4])
        )
    elif cmd == "args":
        method = None if argv[1] == "-" else argv[1]
        kwargs = ast.literal_eval(argv[3]) if len(argv) > 3 else {}
        blob = d.encode_args(method, ast.literal_eval(argv[2]), kwargs)
    elif cmd == "decode":
        with open(argv[1], "rb") as f:
            value = d.decode_result(f.read())
        text = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else repr(value)
        blob = text.encode()
    else:
        raise SystemExit(f"unknown command {cmd}")
    sys.stdout.buffer.write(blob)


if __name__ == "__main__":
    main(sys.argv[1:])
