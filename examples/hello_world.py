"""Hello world: one function, called once with .remote() and fanned out with .map().

Run it with `onshore run examples/hello_world.py` (or `modal run` after `eval "$(onshore env)"`).
"""

import modal

app = modal.App("hello-world")


@app.function()
def square(x: int) -> int:
    # This runs in a container: its output streams back to your terminal.
    print(f"square({x}) running in a container")
    return x * x


@app.local_entrypoint()
def main() -> None:
    # One remote call...
    print("square(7) =", square.remote(7))
    # ...and a parallel fan-out over many inputs.
    print("squares:", list(square.map(range(10))))
