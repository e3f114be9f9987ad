"""Every example in examples/ runs unchanged through the real `modal run` and prints what it promises."""

import pytest

from tests.conftest import REPO, ServerProcess, run_modal

EXPECTED = {
    "hello_world.py": ["square(7) = 49", "squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]"],
    "map_fanout.py": [
        "lengths: [7, 4, 5, 4, 2, 4, 3, 8]",
        "powers: [1024, 81, 1000]",
        "ONSHORE",
        "total characters: 37",
    ],
    "class_with_enter.py": [
        "Hello, Ada!",
        "Hello, Grace!",
        "Bonjour, Alan!",
        "loading the 'Hello' greeter",
        "loading the 'Bonjour' greeter",
    ],
    "spawn_and_poll.py": ["result: 499999500000", "fetched again by id: 499999500000"],
    "use_secrets.py": ["SERVICE_TOKEN is set (16 characters)"],
    "volume_notes.py": [
        "reader sees: first note",
        "same reader, no reload: first note",
        "after reload: second note",
        "files in the volume: ['note.txt']",
    ],
}


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_example_runs(server: ServerProcess, example: str) -> None:
    result = run_modal(server, "run", str(REPO / "examples" / example))
    assert result.returncode == 0, result.output
    for text in EXPECTED[example]:
        assert text in result.output, f"{text!r} missing from:\n{result.output}"
    # The greeter loads once per container, not once per call.
    if example == "class_with_enter.py":
        assert result.output.count("loading the 'Hello' greeter") == 1, result.output


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in (REPO / "examples").glob("*.py")) == sorted(EXPECTED)
