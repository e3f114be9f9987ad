"""A class whose @modal.enter method loads state once per container, reused by every call.

Run it with `onshore run examples/class_with_enter.py`.
"""

import time

import modal

app = modal.App("example-class-with-enter")


@app.cls(scaledown_window=30)
class Greeter:
    # Each distinct greeting gets containers of its own.
    greeting: str = modal.parameter(default="Hello")

    @modal.enter()
    def load(self) -> None:
        # Runs once when the container starts: put slow set-up (loading a model...) here.
        self.loaded_at = time.time()
        print(f"loading the {self.greeting!r} greeter")

    @modal.method()
    def greet(self, name: str) -> str:
        return f"{self.greeting}, {name}! (container up for {time.time() - self.loaded_at:.2f}s)"

    @modal.exit()
    def unload(self) -> None:
        print(f"the {self.greeting!r} greeter is shutting down")


@app.local_entrypoint()
def main() -> None:
    hello = Greeter()
    print(hello.greet.remote("Ada"))
    print(hello.greet.remote("Grace"))  # same container: @enter does not run again
    print(Greeter(greeting="Bonjour").greet.remote("Alan"))  # a new parameter: a new container
