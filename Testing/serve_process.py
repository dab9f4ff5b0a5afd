"""``serve`` started as a user starts it, in the server's own Python, for the tests and the benchmark: on free
loopback ports, waited for until it lists its models, and stopped with SIGTERM, which must leave no process."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_PYTHON = REPO_ROOT / ".venv-triton" / "bin" / "python"  # Testing/setup_triton.sh: PyTriton wants numpy < 2


@dataclass
class Served:
    url: str
    process: subprocess.Popen
    listing: list  # the "serving on" line, then one line per model
    ports: tuple
    errors: Path  # the server's stderr

    def tree(self) -> list:
        """The server's processes: Triton, its backend stubs, the instances' workers and the standby worker."""
        return [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]


def free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def start_serve(arguments: list, models: int, errors: Path, seconds: float = 300) -> Served:
    """``serve ARGUMENTS`` with its workers in this Python; raises with what it printed if it does not list
    ``models`` models in time. ``errors``: a file for its stderr (a pipe nobody reads would fill and block it)."""
    if not SERVER_PYTHON.exists():
        raise RuntimeError("run Testing/setup_triton.sh first: it makes .venv-triton, the server's Python")
    http, grpc, metrics = free_ports(3)
    process = subprocess.Popen(
        [str(SERVER_PYTHON), "-m", "MonaiDeployerLib", "serve", *map(str, arguments), "--python", sys.executable,
         "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        stdout=subprocess.PIPE, stderr=errors.open("w"), cwd=REPO_ROOT / "MonaiDeployer")
    printed = _read_until_serving(process, models, time.monotonic() + seconds)
    if len(printed) < models + 1 or not printed[-models - 1].startswith("serving on"):
        process.kill()
        raise RuntimeError(f"serve did not start: {''.join(printed)}{errors.read_text()}")
    return Served(f"http://127.0.0.1:{http}", process, printed[-models - 1:], (http, grpc, metrics), errors)


def start_tritonserver(repository: Path, workspace: Path, log: Path, seconds: float = 300) -> Served:
    """The ``tritonserver`` binary PyTriton's wheel carries, alone, serving ``repository`` as NVIDIA's Triton
    container would: its Python backend with the stub for the server's Python, on free loopback ports. Ready when
    ``/v2/health/ready`` answers 200."""
    site_packages = next((REPO_ROOT / ".venv-triton" / "lib").glob("python3*/site-packages"))
    wheel = site_packages / "pytriton" / "tritonserver"
    server = workspace / "tritonserver"
    shutil.copytree(wheel, server, ignore=shutil.ignore_patterns("python_backend_stubs"))
    version = site_packages.parent.name.removeprefix("python")
    shutil.copy(wheel / "python_backend_stubs" / version / "triton_python_backend_stub", server / "backends" / "python")
    environment = {**os.environ, "PATH": f"{SERVER_PYTHON.parent}{os.pathsep}{os.environ['PATH']}",
                   "LD_LIBRARY_PATH": os.pathsep.join([str(site_packages / "nvidia_pytriton.libs"),
                                                       sysconfig.get_config_var("LIBDIR")])}
    http, grpc, metrics = free_ports(3)
    process = subprocess.Popen(
        [str(server / "bin" / "tritonserver"), "--model-repository", str(repository), "--backend-directory",
         str(server / "backends"), "--http-address", "127.0.0.1", "--grpc-address", "127.0.0.1",
         "--metrics-address", "127.0.0.1", "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port",
         str(metrics)], stdout=log.open("w"), stderr=subprocess.STDOUT, env=environment, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{http}", time.monotonic() + seconds
    while not _ready(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"tritonserver did not become ready: {log.read_text()[-4000:]}")
        time.sleep(0.5)
    return Served(url, process, [], (http, grpc, metrics), log)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def served_until_done(arguments: list, models: int, errors: Path):
    """A fixture's body: ``serve ARGUMENTS`` started and yielded, then stopped; a process it leaves fails the test."""
    served = start_serve(arguments, models, errors)
    try:
        yield served
    finally:
        left = stop_serve(served)
    assert not left, left


def stop_serve(served: Served) -> list:
    """SIGTERM, as a service manager stops it; the command lines of any of its processes still alive after, which
    are then killed (so that nothing holds the ports or the CPU for what comes next)."""
    tree = served.tree()[1:]  # now, with the workers that replaced others
    served.process.send_signal(signal.SIGTERM)
    try:
        code = served.process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        code = None
    _gone, alive = psutil.wait_procs(tree, timeout=30)
    left = [" ".join(each.cmdline()[:3]) for each in alive if each.is_running()]
    for each in [served.process, *alive]:
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            each.kill()
    if code != 0:
        left.insert(0, f"serve exited with {code}: {served.errors.read_text()}")
    return left


def _read_until_serving(process: subprocess.Popen, models: int, deadline: float) -> list:
    """serve's lines up to "serving on" and the ``models`` lines after it, or what it printed by the deadline (or
    before it ended)."""
    printed, pending = [], ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        if not ready:
            continue
        chunk = os.read(process.stdout.fileno(), 65536).decode()
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split("\n")
        printed += [line + "\n" for line in lines]
        starts = [index for index, line in enumerate(printed) if line.startswith("serving on")]
        if starts and len(printed) > starts[0] + models:
            return printed[:starts[0] + models + 1]
    return printed
