"""``serve``: NVIDIA Triton Inference Server, started by PyTriton, with one model per package.

Triton takes the requests, checks each tensor's type and shape and queues them; each model instance hands its
requests to a warm worker of its own (``served.ServedPackage``), so every kind of package runs as it does locally.
Only the packages named at start are served: clients send volumes, never code. PyTriton is imported here alone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pathlib
import socket
import sysconfig

import numpy as np

from ..errors import PackageError, WorkerError
from . import v2
from .in_flight import InFlight, progress_callable, runs_callable
from .served import ServedPackage, catalogue_callable

LOOPBACK = "127.0.0.1"


def exposure_warning(host: str) -> str | None:
    """What listening on ``host`` exposes, when it is not this machine alone."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host == "localhost":
            return None
    return (f"listening on {host}: anyone who can reach this machine there can send volumes to these models and "
            "read their answers; Triton authenticates nobody, so put a TLS proxy with authentication in front")


def serve(served: list[ServedPackage], in_flight: InFlight, host: str = LOOPBACK, http_port: int = 8000,
          grpc_port: int = 8001, metrics_port: int = 8002, log_file: str | None = None, started=None) -> None:
    """Serve until interrupted (SIGINT, which the command line makes of SIGTERM too), with the ``RUNS`` and
    ``PROGRESS`` models answering for the runs ``in_flight``; ``started()`` is called once every model is ready.
    Triton's own log goes to ``log_file`` (default: this process's output)."""
    try:
        from pytriton.model_config import ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError as error:
        raise PackageError("serve needs NVIDIA's PyTriton in this Python: pip install nvidia-pytriton "
                           f"({error})") from error
    check_ports_free(host, (http_port, grpc_port, metrics_port))
    config = TritonConfig(http_address=host, grpc_address=host, metrics_address=host, http_port=http_port,
                          grpc_port=grpc_port, metrics_port=metrics_port,
                          log_file=pathlib.Path(log_file) if log_file else None)
    inputs = [Tensor(name=v2.volume_input(datatype), shape=(-1, -1, -1, -1), dtype=v2.DATATYPES[datatype],
                     optional=True) for datatype in v2.VOLUME_TYPES]
    inputs += [Tensor(name=v2.IJK_TO_RAS, shape=(4, 4), dtype=np.float64, optional=True),
               Tensor(name=v2.DESCRIBE, shape=(1,), dtype=bytes, optional=True)]
    result = Tensor(name=v2.RESULT, shape=(1,), dtype=bytes)
    triton = Triton(config=config)
    try:
        try:
            with _this_pythons_library():  # for Triton's processes alone, not for workers started later
                triton.run()
            for package in served:
                labelmap = Tensor(name=v2.LABELMAP, shape=(-1, -1, -1, -1),
                                  dtype=v2.DATATYPES[package.labelmap_datatype])
                triton.bind(package.name, package.instances, inputs, [labelmap, result],
                            config=ModelConfig(batching=False), strict=True)
            triton.bind(v2.CATALOGUE, catalogue_callable(served, grpc_port),
                        [Tensor(name=v2.DESCRIBE, shape=(1,), dtype=bytes)], [result],
                        config=ModelConfig(batching=False))
            triton.bind(v2.RUNS, runs_callable(in_flight), [Tensor(name=name, shape=(1,), dtype=bytes) for name in
                                                            (v2.RUN_ID, v2.ACTION)],
                        [result], config=ModelConfig(batching=False))
            triton.bind(v2.PROGRESS, progress_callable(in_flight), [Tensor(name=v2.RUN_ID, shape=(1,), dtype=bytes)],
                        [result], config=ModelConfig(batching=False, decoupled=True))
        except Exception as error:  # PyTriton's own errors are tracebacks: one line, and where to look
            first = v2.one_line((str(error) or type(error).__name__).split("\n")[0])
            raise WorkerError(f"Triton did not start: {first}" + (f" (its log: {log_file})" if log_file else "")) \
                from error
        if started is not None:
            started()
        triton.serve()
    finally:
        triton.stop()


def check_ports_free(host: str, ports) -> None:
    """Refuse a port another process listens on, at once (Triton would wait two minutes, then fail)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in ports:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                raise WorkerError(f"cannot listen on {host} port {port}: {error.strerror or error}") from error


@contextlib.contextmanager
def _this_pythons_library():
    """Triton's Python-backend stub links ``libpython``: it must find this interpreter's, not another Python's of
    the same version (which fails every model's load), so its folder goes first on the search path while Triton
    starts."""
    before = os.environ.get("LD_LIBRARY_PATH")
    library = sysconfig.get_config_var("LIBDIR")
    if library:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([library, *[part for part in (before or "").split(os.pathsep)
                                                                     if part]])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = before
