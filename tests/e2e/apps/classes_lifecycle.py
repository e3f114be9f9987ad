"""Test app for tests/e2e/test_classes.py: a parameterized class with enter, exit and methods."""

import json
import os
import time

import modal

app = modal.App("e2e-classes-lifecycle")

# Counts @enter runs in this container process; a second run in the same container would show 2.
ENTER_RUNS = 0


def emit(tag: str, value: object) -> None:
    """Print one result line that the test parses: `RESULT <tag> <json>`."""
    print(f"RESULT {tag} {json.dumps(value)}", flush=True)


# A long scaledown window by default, so that on a loaded machine a container does not scale down between two
# calls; the scale-down test sets a short one (the client sends the value it sees at import).
SCALEDOWN_WINDOW = int(os.environ.get("E2E_CLASSES_SCALEDOWN_WINDOW", "30"))


@app.cls(scaledown_window=SCALEDOWN_WINDOW)
class Model:
    n: int = modal.parameter()
    report_exit: int = modal.parameter(default=0)

    @modal.enter()
    def load(self) -> None:
        global ENTER_RUNS
        ENTER_RUNS += 1
        self.calls = 0
        self.loaded_n = self.n  # parameters are already set when enter runs

    @modal.method()
    def info(self) -> dict[str, object]:
        self.calls += 1
        return {
            "n": self.n,
            "loaded_n": self.loaded_n,
            "calls": self.calls,
            "enter_runs": ENTER_RUNS,
            "task": os.environ.get("MODAL_TASK_ID", ""),
        }

    @modal.method()
    def times(self, x: int) -> int:
        return self.n * x

    @modal.exit()
    def teardown(self) -> None:
        if self.report_exit:  # the test finds this line in the app's logs
            report = {"n": self.n, "calls": self.calls, "task": os.environ.get("MODAL_TASK_ID", "")}
            print(f"EXIT-MARKER {json.dumps(report)}", flush=True)


@app.local_entrypoint()
def shared_state() -> None:
    model = Model(n=3)
    emit("first", model.info.remote())
    emit("second", model.info.remote())
    emit("times", model.times.remote(5))
    emit("times_map", list(model.times.map([1, 2, 3])))


@app.local_entrypoint()
def parameters() -> None:
    one, two = Model(n=1), Model(n=2)
    emit("one_a", one.info.remote())
    emit("two_a", two.info.remote())
    emit("one_b", one.info.remote())
    emit("two_b", two.info.remote())


@app.local_entrypoint()
def exit_hook() -> None:
    model = Model(n=7, report_exit=1)
    emit("info", model.info.remote())
    emit("info2", model.info.remote())
    # The container is still up (scaledown_window=30 has not passed): @exit must not have run yet, so no
    # EXIT-MARKER line may stream to this run's output before this one.
    time.sleep(1.0)
    emit("calls_done", True)
