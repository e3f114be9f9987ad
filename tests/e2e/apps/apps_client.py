"""Test client for tests/e2e/test_apps.py: looks up deployed apps through the Python API from another process.

Usage: apps_client.py call APP FUNCTION [ARG] | call-error APP FUNCTION | cls APP CLASS METHOD ARG
                      | missing APP | function-id APP FUNCTION
Prints one `RESULT <json>` line.
"""

import json
import sys

import modal


def emit(value: object) -> None:
    print(f"RESULT {json.dumps(value)}", flush=True)


def error_of(action: object) -> dict[str, str]:
    try:
        action()  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the test inspects the type
        return {"type": type(exc).__name__, "message": str(exc)}
    return {"type": "none", "message": ""}


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "call":
        app_name, function_name, *args = argv[1:]
        emit(modal.Function.from_name(app_name, function_name).remote(*args))
    elif command == "call-error":
        app_name, function_name = argv[1:3]
        emit(error_of(lambda: modal.Function.from_name(app_name, function_name).remote("x")))
    elif command == "cls":
        app_name, class_name, method, arg = argv[1:5]
        obj = modal.Cls.from_name(app_name, class_name)()
        emit(getattr(obj, method).remote(arg))
    elif command == "function-id":
        app_name, function_name = argv[1:3]
        fn = modal.Function.from_name(app_name, function_name)
        fn.hydrate()
        emit(fn.object_id)
    elif command == "missing":
        app_name = argv[1]
        emit(
            {
                "app": error_of(lambda: modal.Function.from_name(app_name + "-nope", "hello").remote("x")),
                "function": error_of(lambda: modal.Function.from_name(app_name, "nope").remote("x")),
                "cls": error_of(lambda: modal.Cls.from_name(app_name, "Nope")().greet.remote("x")),
                "app_lookup": error_of(lambda: modal.App.lookup(app_name + "-nope")),
            }
        )
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
