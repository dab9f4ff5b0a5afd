"""The command line's ``serve`` and ``models``."""

from __future__ import annotations

import json
import os
import signal
import sys

from ..environment.home import home_folder
from ..errors import MonaiDeployerError
from ..packages import open_package
from ..packages.trust import TrustList
from ..runs.runner import threads_per_job
from .export import export_repository
from .in_flight import InFlight
from .remote import RemoteServer
from .served import ServedPackage
from .triton_server import check_ports_free, exposure_warning, serve
from .workers import Workers


def serve_command(arguments) -> int:
    """Open and trust every package, start its workers, then serve until SIGINT or SIGTERM."""
    check_ports_free(arguments.host, (arguments.http_port, arguments.grpc_port, arguments.metrics_port))
    packages = _trusted_packages(arguments)
    # a model's instances run side by side and share the cores; different models' runs rarely meet
    workers = Workers(arguments.python, arguments.device, threads_per_job(arguments.instances))
    in_flight = InFlight()
    served = [ServedPackage(package, arguments.instances, workers, in_flight) for package in packages]
    names = [package.name for package in served]
    if len(set(names)) < len(names):
        raise MonaiDeployerError("a package is named twice (the same content): serve each once")
    warning = exposure_warning(arguments.host)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    _interrupt_on(signal.SIGTERM, signal.SIGINT)  # SIGINT too: a shell may start a background job ignoring it
    try:
        workers.warm_standby()
        for package in served:
            package.start()
        serve(served, in_flight, arguments.host, arguments.http_port, arguments.grpc_port, arguments.metrics_port,
              log_file=_triton_log(arguments.http_port), started=lambda: _print_served(arguments, served))
    finally:
        workers.close()
        for package in served:
            package.close()
    return 0


def export_command(arguments) -> int:
    """Write the trusted packages as a Triton model repository, and say how to serve it."""
    names = export_repository(_trusted_packages(arguments), arguments.repository, arguments.instances,
                              arguments.python, arguments.device,
                              {"runtime": arguments.runtime, "entry_point": arguments.entry_point})
    for name in names:
        print(f"wrote {os.path.join(arguments.repository, name)}")
    print(f"serve it with: tritonserver --model-repository {os.path.abspath(arguments.repository)} (the workers' "
          f"Python: {arguments.python or 'python3 on the PATH'})")
    return 0


def _trusted_packages(arguments) -> list:
    """The packages named, opened as the options say; bundles and Deploy apps trusted (their code runs here)."""
    if arguments.instances < 1:
        raise MonaiDeployerError("--instances must be 1 or more")
    packages = [open_package(path, arguments.mode, model=arguments.model, runtime=arguments.runtime,
                             entry_point=arguments.entry_point) for path in arguments.packages]
    trust_list = TrustList()
    for package in packages:
        trust_list.check(package, arguments.trust)
    return packages


def _triton_log(http_port: int) -> str:
    """Where Triton's own log goes (a file per port, rewritten at each start): this command prints only its own."""
    folder = os.path.join(home_folder(), "logs")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"triton-{http_port}.log")


def _interrupt_on(*signals) -> None:
    def interrupt(_number, _frame):
        raise KeyboardInterrupt

    for number in signals:
        signal.signal(number, interrupt)


def _print_served(arguments, served: list) -> None:
    host = f"[{arguments.host}]" if ":" in arguments.host else arguments.host
    print(f"serving on http://{host}:{arguments.http_port} (gRPC {host}:{arguments.grpc_port}, metrics "
          f"{host}:{arguments.metrics_port}); stop with Ctrl-C; Triton's log: {_triton_log(arguments.http_port)}",
          flush=True)
    for package in served:
        instances = f"{len(package.instances)} instance" + ("s" if len(package.instances) > 1 else "")
        title = f"{package.package.name} {package.package.version}".rstrip()
        print(f"  {package.name}  {title} ({package.package.mode}, {instances})", flush=True)


def models_command(arguments) -> int:
    models = RemoteServer(arguments.server).models()
    if arguments.json:
        print(json.dumps(models, indent=2))
        return 0
    for model in models:
        labels = ", ".join(f"{value}={name}" for value, name in sorted(model["labels"].items(),
                                                                         key=lambda item: int(item[0])))
        title = f"{model['name']} {model['version']}".rstrip()
        print(f"{model['model']}\n  {title} ({model['mode']})\n  labels: {labels or 'not declared'}")
    if not models:
        print("the server serves no model")
    return 0
