"""Sandboxes on this machine: real namespaces and overlays, in root and user-namespace modes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from onshore.runtimes.process import sandbox
from onshore.runtimes.process.sandbox import Bind, SandboxError, SandboxSpec

PYTHON = os.path.realpath(sys.executable)  # the host's interpreter, visible inside (the host fs shows)
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

if sys.platform != "linux":
    pytest.skip(f"sandboxes need Linux; this is {sys.platform}", allow_module_level=True)


@pytest.fixture(params=["root", "userns"])
def mechanism(request: pytest.FixtureRequest) -> sandbox.Mechanism:
    mech: sandbox.Mechanism = request.param
    support = sandbox.probe(mech)
    if not support.available:
        pytest.skip(f"no {mech} sandbox here: {support.reason}")
    return mech


class Runner:
    def __init__(self, tmp: Path, mechanism: sandbox.Mechanism) -> None:
        self.tmp, self.mechanism, self.count = tmp, mechanism, 0

    def argv(self, spec: SandboxSpec, argv: list[str]) -> tuple[list[str], Path]:
        self.count += 1
        scratch = self.tmp / f"scratch-{self.count}"
        return sandbox.command(spec, argv, scratch, self.mechanism), scratch

    def run(self, spec: SandboxSpec, script: str) -> subprocess.CompletedProcess[str]:
        argv, scratch = self.argv(spec, ["/bin/sh", "-c", script])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert not scratch.exists(), "the sandbox removes its scratch dir when it ends"
        return done

    def spawn(self, spec: SandboxSpec, argv: list[str]) -> tuple[subprocess.Popen[str], Path]:
        command, scratch = self.argv(spec, argv)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return proc, scratch


@pytest.fixture
def run(tmp_path: Path, mechanism: sandbox.Mechanism) -> Runner:
    return Runner(tmp_path, mechanism)


def spec(**kwargs: object) -> SandboxSpec:
    kwargs.setdefault("env", dict(ENV))
    kwargs.setdefault("workdir", "/")
    return SandboxSpec(**kwargs)  # type: ignore[arg-type]


def make_layer(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    root.mkdir(parents=True, exist_ok=True)
    return root


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ------------------------------------------------------------------------------------------- tests
def test_probe_names_a_mechanism() -> None:
    support = sandbox.probe()
    assert support.mechanism in ("root", "userns", "none")
    if support.available:
        assert support.reason == "" and (support.mechanism == "root") == (os.geteuid() == 0)
    else:
        assert support.reason


def test_host_files_are_read_only(run: Runner) -> None:
    name = f"onshore-{uuid.uuid4().hex}"
    done = run.run(spec(), f"touch /usr/{name} || echo usr-refused; touch /etc/{name} || echo etc-refused")
    assert "usr-refused" in done.stdout and "etc-refused" in done.stdout
    assert "Read-only file system" in done.stderr
    assert not Path(f"/usr/{name}").exists() and not Path(f"/etc/{name}").exists()


def test_host_files_can_take_private_writes(run: Runner) -> None:
    name = f"onshore-{uuid.uuid4().hex}"
    done = run.run(
        spec(private_host_writes=True), f"echo x > /usr/{name} && cat /usr/{name}; ls /usr/bin/env"
    )
    assert done.stdout.split() == ["x", "/usr/bin/env"], done.stderr
    assert not Path(f"/usr/{name}").exists()


DEV = "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"


def test_dev_is_minimal_and_works(run: Runner) -> None:
    program = "import os; os.openpty(); open('/dev/shm/x', 'w'); print(*sorted(os.listdir('/dev')))"
    script = f'echo x > /dev/null && head -c 4 /dev/urandom | wc -c && {PYTHON} -I -c "{program}"'
    done = run.run(spec(), script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["4", DEV]


def test_layer_files_show_at_their_paths(run: Runner, tmp_path: Path) -> None:
    bottom = make_layer(tmp_path / "l1", {"/opt/onshore-t/a.txt": "from bottom", "/models/m": "weights"})
    top = make_layer(tmp_path / "l2", {"/opt/onshore-t/a.txt": "from top", "/usr/local/onshore-t": "u"})
    done = run.run(
        spec(layers=[bottom, top]),
        "cat /opt/onshore-t/a.txt /models/m /usr/local/onshore-t; ls /usr/bin/env; ls /",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("from topweightsu/usr/bin/env\n")
    assert "tmp" in done.stdout.split() and "l1" not in done.stdout.split()


def test_build_mode_writes_land_in_upper_and_make_a_layer(run: Runner, tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    done = run.run(
        spec(upper=upper),
        "mkdir -p /opt/onshore-t && echo built > /opt/onshore-t/f && mkdir -p /models "
        "&& echo w > /models/w && echo scratch > /tmp/t && echo n > /newfile",
    )
    assert done.returncode == 0, done.stderr
    assert (upper / "opt/onshore-t/f").read_text() == "built\n"
    assert (upper / "models/w").read_text() == "w\n"
    # Only what the command wrote: no mount points, no empty dirs, nothing from /tmp.
    assert sorted(os.listdir(upper)) == ["models", "newfile", "opt"]
    assert not Path("/opt/onshore-t").exists()
    done = run.run(spec(layers=[upper]), "cat /opt/onshore-t/f /models/w /newfile; ls /opt")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("built\nw\nn\n")
    assert set(os.listdir("/opt")) <= set(done.stdout.split()[3:])  # the host's /opt shows under it


def test_build_mode_deletions_hide_lower_files(run: Runner, tmp_path: Path) -> None:
    base = make_layer(tmp_path / "base", {"/opt/onshore-t/a": "a", "/opt/onshore-t/b": "b", "/srv/d/x": "x"})
    upper = tmp_path / "upper"
    done = run.run(spec(layers=[base], upper=upper), "rm /opt/onshore-t/a && rm -r /srv/d && mkdir /srv/d")
    assert done.returncode == 0, done.stderr
    whiteout = os.lstat(upper / "opt/onshore-t/a")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(upper / "srv/d", "user.overlay.opaque") == b"y"
    done = run.run(spec(layers=[base, upper]), "ls /opt/onshore-t; ls -A /srv/d; echo end")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["b", "end"]


def test_tmp_is_private(run: Runner) -> None:
    name = f"onshore-{uuid.uuid4().hex}"
    done = run.run(spec(), f"ls -A /tmp | wc -l; echo secret > /tmp/{name} && cat /tmp/{name}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "secret"]
    assert not Path(f"/tmp/{name}").exists()


def test_root_shows_the_code_dir_with_private_writes(run: Runner, tmp_path: Path) -> None:
    code = make_layer(tmp_path / "code", {"main.py": "print('hi')\n"})
    done = run.run(
        spec(binds=[Bind(code, "/root", overlay=True)], workdir="/root"),
        "pwd; cat main.py; echo new > new.txt && echo changed > main.py && cat main.py && ls",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["/root", "print('hi')", "changed", "main.py", "new.txt"]
    assert sorted(os.listdir(code)) == ["main.py"] and (code / "main.py").read_text() == "print('hi')\n"

    done = run.run(spec(binds=[Bind(code, "/root")], workdir="/root"), "touch x || echo refused")
    assert "refused" in done.stdout and not (code / "x").exists()
    done = run.run(spec(binds=[Bind(code, "/root", writable=True)], workdir="/root"), "echo v > vol.txt")
    assert done.returncode == 0 and (code / "vol.txt").read_text() == "v\n"


def test_binds_nest_inside_the_code_dir(run: Runner, tmp_path: Path) -> None:
    """A dir the code dir's bind hides (e.g. the host's Python under /root) can be bound back."""
    code = make_layer(tmp_path / "code", {"app.py": "import sys; print(sys.version_info[0])\n"})
    prefix = Path(sys.base_prefix).resolve()
    inner = "/root/.onshore-test/python"
    binds = [Bind(code, "/root", overlay=True), Bind(prefix, inner), Bind(prefix, str(prefix))]
    done = run.run(
        spec(binds=binds, workdir="/root"),
        f"{PYTHON} -I app.py; ls {inner} | grep -cx bin; ls -A /root",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["3", "1"]
    assert ".onshore-test" in done.stdout.split() and not (code / ".onshore-test").exists()


def test_own_pid_namespace(run: Runner) -> None:
    done = run.run(spec(), "echo $$; ls /proc | grep -c '^[0-9]'")
    assert done.returncode == 0, done.stderr
    pid, count = done.stdout.split()
    assert pid == "2"  # the init is 1
    assert int(count) <= 5


def test_sigkill_of_the_spawned_process_ends_everything(run: Runner) -> None:
    proc, scratch = run.spawn(spec(), ["/bin/sh", "-c", "sleep 1000 & sleep 1000 & echo ready; wait"])
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    inside = descendants(proc.pid)
    assert len(inside) >= 4  # the init, sh and two sleeps
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in inside) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in inside if alive(p)]
    sandbox.cleanup(scratch)
    assert not scratch.exists()


def test_signals_reach_the_command(run: Runner) -> None:
    program = textwrap.dedent(
        """
        import signal, sys, time
        def on_int(*_):
            print("got SIGINT", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGINT, on_int)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    proc, _ = run.spawn(spec(), [PYTHON, "-I", "-c", program])
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (3, "got SIGINT\n"), err

    proc, _ = run.spawn(spec(), ["/bin/sh", "-c", "echo ready; sleep 60"])
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM


def test_exit_status_passes_through(run: Runner) -> None:
    assert run.run(spec(), "exit 7").returncode == 7
    assert run.run(spec(), "kill -KILL $$").returncode == -signal.SIGKILL
    missing = run.argv(spec(), ["/no/such/program"])[0]
    done = subprocess.run(missing, capture_output=True, text=True, timeout=60)
    assert done.returncode == 127 and "cannot run /no/such/program" in done.stderr
    done = run.run(spec(workdir="/no/such/dir"), "true")
    assert done.returncode == sandbox.EXIT_SETUP_FAILED and "/no/such/dir" in done.stderr


def test_stdout_and_stderr_pass_through(run: Runner) -> None:
    done = run.run(spec(env={**ENV, "GREETING": "hello"}), 'echo "$GREETING out"; echo err >&2; env | wc -l')
    assert done.stdout.splitlines()[0] == "hello out" and done.stderr == "err\n"
    assert int(done.stdout.splitlines()[1]) <= len(ENV) + 3  # the spec's environment, not the host's


def test_unix_socket_and_loopback_reachable(run: Runner, tmp_path: Path) -> None:
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir()
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(sock_dir / "server.sock"))
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    servers = [unix, tcp]

    def serve(server: socket.socket) -> None:
        server.listen()
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"pong:" + conn.recv(100))

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    program = textwrap.dedent(
        f"""
        import socket
        for family, address in ((socket.AF_UNIX, "/run/onshore-test/server.sock"),
                                (socket.AF_INET, ("127.0.0.1", {tcp.getsockname()[1]}))):
            s = socket.socket(family)
            s.connect(address)
            s.sendall(b"ping")
            print(s.recv(100).decode())
        """
    )
    done = run.run(
        spec(binds=[Bind(sock_dir, "/run/onshore-test")]),
        f"{PYTHON} -I -c '{program}' && touch /run/onshore-test/x || echo read-only",
    )
    for server in servers:
        server.close()
    assert done.stdout.split() == ["pong:ping", "pong:ping", "read-only"], done.stderr


def test_layers_inside_the_host_tree(run: Runner) -> None:
    """Layers, upper and scratch in a data dir on the host's own filesystem (not under /tmp) work."""
    data = Path(tempfile.mkdtemp(prefix="onshore-sandbox-test-", dir="/var/tmp"))
    try:
        (data / "secret").write_text("s")
        base = make_layer(data / "layers/base", {"/var/tmp/in-layer": "layer\n"})
        runner = Runner(data, run.mechanism)
        upper = data / "layers/build"
        done = runner.run(
            spec(layers=[base], upper=upper, hidden=[data]),
            f"ls {data} || echo hidden; cat /var/tmp/in-layer; echo b > /var/tmp/built; ls /var/tmp | wc -l",
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.split("\n")
        assert lines[:2] == ["hidden", "layer"] and int(lines[2]) >= 2
        assert sorted(os.listdir(upper)) == ["var"] and (upper / "var/tmp/built").read_text() == "b\n"
        # Without `hidden`, the data dir shows, but not the layers and scratch dirs in it.
        script = f"cat /var/tmp/built {data}/secret; ls -A {data}/layers"
        done = runner.run(spec(layers=[base, upper]), script)
        assert done.stdout.split() == ["b", "s"], done.stderr
    finally:
        sandbox.cleanup(data)


def test_host_entries_removed_after_the_plan_do_not_fail_the_start(run: Runner) -> None:
    """A directory that leads to a hidden path shows the host's entries one mount each; one removed between
    the plan and the mounts (another program's temp dir, say) is not mounted instead of failing the container:
    its place shows empty."""
    data = Path(tempfile.mkdtemp(prefix="onshore-sandbox-test-", dir="/var/tmp"))
    gone_dir = Path(tempfile.mkdtemp(prefix="onshore-sandbox-gone-", dir="/var/tmp"))
    gone_file = Path(tempfile.mkstemp(prefix="onshore-sandbox-gone-", dir="/var/tmp")[1])
    kept = Path(tempfile.mkdtemp(prefix="onshore-sandbox-kept-", dir="/var/tmp"))
    try:
        runner = Runner(data, run.mechanism)
        (kept / "here").write_text("k")
        script = f"ls -A {gone_dir}; wc -c < {gone_file}; cat {kept}/here; echo; ls {data} || echo hidden"
        argv, _ = runner.argv(spec(hidden=[data]), ["/bin/sh", "-c", script])
        gone_dir.rmdir()
        gone_file.unlink()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["0", "k", "hidden"], done.stdout + done.stderr
    finally:
        for path in (data, gone_dir, kept):
            shutil.rmtree(path, ignore_errors=True)
        gone_file.unlink(missing_ok=True)


def test_host_dirs_removed_after_the_plan_do_not_fail_a_build(run: Runner, tmp_path: Path) -> None:
    """In a build (a sandbox with an upper dir) each host directory beside a hidden path is an overlay of
    its own; one removed between the plan and the mounts (a parallel test's temp dir) shows empty instead of
    failing the start with ENOENT."""
    data = Path(tempfile.mkdtemp(prefix="onshore-sandbox-test-", dir="/var/tmp"))
    gone_dir = Path(tempfile.mkdtemp(prefix="onshore-sandbox-gone-", dir="/var/tmp"))
    kept = Path(tempfile.mkdtemp(prefix="onshore-sandbox-kept-", dir="/var/tmp"))
    try:
        runner = Runner(data, run.mechanism)
        (kept / "here").write_text("k")
        script = f"ls -A {gone_dir}; cat {kept}/here; echo; ls {data} || echo hidden"
        argv, _ = runner.argv(spec(hidden=[data], upper=tmp_path / "upper"), ["/bin/sh", "-c", script])
        gone_dir.rmdir()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["k", "hidden"], done.stdout + done.stderr
    finally:
        for path in (data, gone_dir, kept):
            shutil.rmtree(path, ignore_errors=True)


def test_python_venv_built_in_a_layer_runs(run: Runner, tmp_path: Path) -> None:
    upper = tmp_path / "venv-layer"
    done = run.run(spec(upper=upper), f"{PYTHON} -m venv /opt/venv")
    assert done.returncode == 0, done.stderr
    assert (upper / "opt/venv/bin/python").is_symlink() and (upper / "opt/venv/pyvenv.cfg").exists()
    program = "import sys, pip; print(sys.prefix, sys.executable, pip.__file__.startswith(sys.prefix))"
    done = run.run(spec(layers=[upper], workdir="/opt"), f"/opt/venv/bin/python -c '{program}'")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["/opt/venv", "/opt/venv/bin/python", "True"]


def test_bad_specs_are_refused(tmp_path: Path) -> None:
    mech: sandbox.Mechanism = "root" if os.geteuid() == 0 else "userns"
    with pytest.raises(SandboxError, match="absolute"):
        sandbox.command(spec(binds=[Bind(tmp_path, "data")]), ["true"], tmp_path / "s1", mech)
    with pytest.raises(SandboxError, match="not a directory"):
        sandbox.command(spec(layers=[tmp_path / "missing"]), ["true"], tmp_path / "s2", mech)
    with pytest.raises(SandboxError, match="/proc"):
        sandbox.command(spec(binds=[Bind(tmp_path, "/proc/x")]), ["true"], tmp_path / "s3", mech)
    (tmp_path / "s4").mkdir()
    (tmp_path / "s4" / "f").write_text("")
    with pytest.raises(SandboxError, match="not empty"):
        sandbox.command(spec(), ["true"], tmp_path / "s4", mech)
    with pytest.raises(SandboxError, match="overlap"):
        sandbox.command(spec(layers=[tmp_path], upper=tmp_path / "up"), ["true"], tmp_path / "s5", mech)
    if Path("/dev/shm").is_dir() and os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev:
        other_fs = Path(tempfile.mkdtemp(dir="/dev/shm"))
        try:
            with pytest.raises(SandboxError, match="same filesystem"):
                sandbox.command(spec(upper=other_fs), ["true"], tmp_path / "s6", mech)
        finally:
            shutil.rmtree(other_fs)
    assert not any((tmp_path / f"s{i}").exists() for i in (1, 2, 3, 5, 6))


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="onshore-sandbox-user-"))
    path.chmod(0o777)
    yield path
    sandbox.cleanup(path)


def test_unprivileged_user_gets_a_userns_sandbox(shared_dir: Path) -> None:
    setpriv, python = shutil.which("setpriv"), "/usr/bin/python3"
    if os.geteuid() != 0 or setpriv is None or not os.access(python, os.X_OK):
        pytest.skip("needs root, setpriv and /usr/bin/python3 to become an unprivileged user")
    src = str(Path(sandbox.__file__).parents[3])
    script = textwrap.dedent(
        f"""
        import subprocess, sys
        from pathlib import Path
        from onshore.runtimes.process import sandbox
        support = sandbox.probe()
        if not support.available:
            print("unavailable:", support.reason)
            sys.exit(0)
        spec = sandbox.SandboxSpec(upper=Path("{shared_dir}/upper"), workdir="/", env={{"PATH": "/bin"}})
        argv = sandbox.command(spec, ["/bin/sh", "-c", "id -u; mkdir /models && echo w > /models/w"],
                               Path("{shared_dir}/scratch"))
        print(support.mechanism, subprocess.run(argv).returncode, flush=True)
        """
    )
    done = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": src},
        cwd=shared_dir,
    )
    if done.stdout.startswith("unavailable:"):
        pytest.skip(f"no user-namespace sandbox for an unprivileged user here: {done.stdout}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "userns", "0"], done.stderr
    written = shared_dir / "upper/models/w"
    assert written.read_text() == "w\n" and written.stat().st_uid == 65534
