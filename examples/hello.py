"""Hello world: `shoal run examples/hello.py` (or `shoal run examples/hello.py --n 5`).

`square` runs in containers; `main` runs here, inside an ephemeral app that lives as long as the
command. The print inside `square` shows up in this terminal, prefixed by its container's id.
"""

import shoal

app = shoal.App("hello")


@app.function()
def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@app.local_entrypoint()
def main(n: int = 10):
    print("square(7) =", square.remote(7))
    print(f"squares of 0..{n - 1} =", list(square.map(range(n))))
