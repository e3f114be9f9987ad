"""Client for the image benchmarks: cache-hit ImageGetOrCreate, a pip_install("numpy") build, cold starts.

Modes (first argument):
- `cache_hit N`: build debian_slim().pip_install("six") once, then time N ImageGetOrCreate RPCs of its
  layers through the client's own stub (each is a cache hit).
- `build_numpy N`: N builds of debian_slim().pip_install("numpy"), all but the first forced (force_build),
  timed from the client as `app.run()` with the image attached to a function.
- `cold_start N`: N never-called functions on a built pip_install("six") image, each in its own app: the
  call's latency when no container of that image runs.
"""

from __future__ import annotations

import sys
import time

import modal


def _layers() -> list[tuple[list[str], bool]]:
    """The two layers of debian_slim().pip_install("six") as the client sends them (builder 2025.06)."""
    from modal._image import _base_image_config, _dockerhub_python_version

    base = _dockerhub_python_version("2025.06", None, allow_free_threading=False, caller_name="bench")
    debian = _base_image_config("debian", "2025.06")
    return [
        (
            [
                f"FROM python:{base}-slim-{debian}",
                "RUN apt-get update",
                "RUN apt-get install -y gcc gfortran build-essential",
                "RUN pip install --upgrade pip wheel uv",
                "RUN echo 'debconf debconf/frontend select Noninteractive' | debconf-set-selections",
                'CMD ["sleep", "172800"]',
            ],
            False,
        ),
        (["FROM base", "RUN python -m pip install six"], True),
    ]


def cache_hit(n: int) -> dict[str, object]:
    from modal_proto import api_pb2

    app = modal.App("bench-image-cache")
    image = modal.Image.debian_slim().pip_install("six")

    @app.function(image=image, serialized=True)
    def noop() -> None:
        return None

    with app.run():  # builds both layers once
        pass
    app_id = modal.App.lookup("bench-image-cache-lookup", create_if_missing=True).app_id

    async def measure() -> list[float]:
        from modal.client import _Client

        client = await _Client.from_env()

        async def get_or_create() -> None:
            parent = ""
            for commands, has_base in _layers():
                req = api_pb2.ImageGetOrCreateRequest(app_id=app_id, builder_version="2025.06")
                req.image.dockerfile_commands.extend(commands)
                if has_base:
                    req.image.base_images.add(image_id=parent, docker_tag="base")
                resp = await client._stub.ImageGetOrCreate(req)
                if resp.result.status != api_pb2.GenericResult.GENERIC_STATUS_SUCCESS:
                    raise SystemExit(f"not a cache hit: {resp}")
                parent = resp.image_id

        for _ in range(10):
            await get_or_create()
        per_rpc: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            await get_or_create()
            per_rpc.append((time.perf_counter() - t0) / 2)
        return per_rpc

    # On the client's own event loop (synchronicity's), like every call the client makes.
    from modal._utils.async_utils import synchronizer

    return {"rpc_s": synchronizer.create_blocking(measure)()}


def build_numpy(n: int) -> dict[str, object]:
    builds: list[float] = []
    for i in range(n):
        app = modal.App(f"bench-image-numpy-{i}")
        image = modal.Image.debian_slim().pip_install("numpy", force_build=i > 0)

        @app.function(image=image, serialized=True, name=f"noop_{i}")
        def noop() -> None:
            return None

        t0 = time.perf_counter()
        with app.run():
            pass
        builds.append(time.perf_counter() - t0)
    return {"build_s": builds}


def cold_start(n: int) -> dict[str, object]:
    from _common import wait_until_quiet

    image = modal.Image.debian_slim().pip_install("six")
    warm = modal.App("bench-image-cold-build")

    @warm.function(image=image, serialized=True)
    def build_only() -> None:
        return None

    with warm.run():
        pass
    samples: list[float] = []
    for i in range(n + 1):
        app = modal.App(f"bench-image-cold-{i}")

        @app.function(image=image, serialized=True, name=f"cold_{i}", scaledown_window=600)
        def cold() -> int:
            import six

            return len(six.__name__)

        with app.run():
            wait_until_quiet()
            t0 = time.perf_counter()
            assert cold.remote() == 3
            samples.append(time.perf_counter() - t0)
    return {"remote_s": samples[1:], "first_s": samples[0]}


def main() -> None:
    from _common import emit

    mode, n = sys.argv[1], int(sys.argv[2])
    emit({"cache_hit": cache_hit, "build_numpy": build_numpy, "cold_start": cold_start}[mode](n))


if __name__ == "__main__":
    main()
