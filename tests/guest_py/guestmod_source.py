"""The user module the runtime tests run; copied into a temporary SHOAL_CODE_DIR as `guestmod.py`
(and imported in-process under that name to build definitions)."""

import asyncio
import os
import threading
import time

import shoal._partial as sp
from shoal._guest import client

IMPORTED_PID = os.getpid()
_barrier = threading.Barrier(3, timeout=10)


def square(x):
    return x * x


def noop():
    return None


def boom(x):
    raise ValueError(f"boom {x}")


class Unpicklable(Exception):
    def __init__(self, a, b):  # unpickling calls Unpicklable(msg) and fails
        super().__init__(f"{a}/{b}")


def boom_unpicklable():
    raise Unpicklable(1, 2)


def count(n):
    for i in range(n):
        yield i


def count_then_fail(n):
    yield from range(n)
    raise RuntimeError("generator failed")


async def asquare(x):
    await asyncio.sleep(0)
    return x * x


async def acount(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


def returns_coroutine(x):
    return asquare(x)


def sleepy(seconds):
    time.sleep(seconds)
    return "slept"


async def asleepy(seconds):
    await asyncio.sleep(seconds)
    return "slept"


def slow_count(n):
    for i in range(n):
        time.sleep(0.02)
        yield i


def meet(tag):
    """Returns only if three inputs run at once (a barrier of 3)."""
    _barrier.wait()
    return tag


def lock():
    return threading.Lock()


def nested(x):
    return (x, client.call("test.echo", b"ping"))


async def anested(x):
    return (x, await client.acall("test.echo", b"ping"))


def nested_fails():
    return client.call("test.missing", b"")


def pid():
    return os.getpid()


class Model:
    k = sp.parameter(default=2)

    @sp.enter()
    def load(self):
        self.loaded = self.k * 100

    @sp.enter()
    async def aload(self):
        await asyncio.sleep(0)
        self.aloaded = True

    @sp.exit()
    def bye(self):
        with open(os.environ["GUEST_MARKER"], "a") as f:
            f.write("exit ran\n")

    def __exit__(self, *exc):
        with open(os.environ["GUEST_MARKER"], "a") as f:
            f.write("__exit__ ran\n")

    @sp.method()
    def mul(self, x):
        return self.k * x

    @sp.method()
    def state(self):
        return (self.loaded, self.aloaded)

    @sp.method()
    async def amul(self, x):
        return self.k * x

    @sp.method()
    def gen(self, n):
        yield from range(n)

    @sp.method()
    def nested(self):
        return client.call("test.echo", b"from a method")

    @sp.method()
    def slow(self, seconds):
        time.sleep(seconds)
        return "slow done"

    def hidden(self):
        return "not a method"


class Legacy:
    def __init__(self, base):
        self.base = base

    def __enter__(self):
        self.entered = True

    @sp.method()
    def get(self):
        return (self.base, self.entered)


class FailingEnter:
    @sp.enter()
    def load(self):
        raise OSError("model weights missing")

    @sp.method()
    def f(self):
        return 1
