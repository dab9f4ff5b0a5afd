"""Command line: ``monaideployer inspect|run|batch|serve|models ...`` (the installed console script) or
``python -m MonaiDeployerLib``; errors are one line on stderr, exit 1."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import MODES, MonaiDeployerError, Runner, open_package, read_volume, write_volume
from .environment.made import list_environments, make_environment, remove_environment
from .environment.requirements import normalise_name
from .imageio.volume import check_output, stack_channels
from .logs import log_to_stderr
from .packages import package_facts
from .packages.map_build import package_app
from .packages.map_image import describe_map
from .packages.trust import TrustList
from .runs.batch import Batch
from .runs.batch_report import BatchReport
from .runs.case_outputs import OUTPUT_SUFFIXES, CaseOutputs, beside, overlapping_segments, voxel_counts
from .runs.cases import find_cases
from .runs.runner import threads_per_job
from .serving.commands import export_command, models_command, serve_command
from .serving.remote_runner import RemoteRunner
from .zoo.commands import resolve_zoo_arguments, zoo_download_command, zoo_list_command

PACKAGE_HELP = ("TorchScript file, MONAI Bundle, MONAI Deploy app, container image, or zoo:NAME[@VERSION] (a Model "
                "Zoo bundle, downloaded on first use)")


def main(argv=None) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.verbose:
        log_to_stderr()
    try:
        resolve_zoo_arguments(arguments)
        return arguments.command(arguments)
    except MonaiDeployerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_program(), description="Run packaged MONAI models on 3D volumes.")
    parser.set_defaults(verbose=False)  # each command takes --verbose
    commands = _Commands(parser.add_subparsers(required=True, metavar="COMMAND"))

    _add_common_options(_package_command(commands, "inspect", "describe a model package and check its requirements",
                                         _inspect))

    run = _package_command(commands, "run", "segment a volume with a model package", _run)
    run.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="input volume: .nrrd, .nii or .nii.gz; several on one grid are the model's input channels, "
                          "in the order given (a 4D file's channels work too)")
    run.add_argument("output", help="output labelmap: .nrrd, .nii, .nii.gz, or .seg.nrrd (segments with names)")
    run.add_argument("--server", metavar="URL",
                     help="run on a server that serve started (http://host:port): PACKAGE is a model it lists "
                          "(models --server URL) or the path of the same package")
    _add_run_options(run)

    batch = _package_command(commands, "batch", "segment many volumes (a cohort) with warm workers", _batch)
    batch.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="volume files (.nrrd, .nii, .nii.gz), folders of them (searched recursively), or folders "
                            "of DICOM files (each image series is one case)")
    batch.add_argument("--output-dir", required=True, metavar="DIR",
                       help="where the outputs go, named after their inputs (a DICOM series: patient_study_series)")
    batch.add_argument("--suffix", default=".seg.nrrd", choices=OUTPUT_SUFFIXES,
                       help="output type (default: %(default)s); .dcm writes a DICOM SEG that references its series")
    batch.add_argument("--skip-existing", action="store_true",
                       help="leave out the cases whose output exists (to resume a batch that was stopped)")
    batch.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="workers running cases side by side (default: 1; one per GPU, or more for CPU-bound "
                            "pre-processing)")
    batch.add_argument("--server", metavar="URL",
                       help="run on a server that serve started, --jobs cases in flight: PACKAGE as for run --server")
    _add_run_options(batch)

    served = _served_packages_command(commands, "serve", "serve packages on NVIDIA Triton (PyTriton): one model per "
                                      "package", serve_command, "warm workers per model, each running one request "
                                      "at a time", "here")
    served.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this machine alone; 0.0.0.0: every one)")
    served.add_argument("--http-port", type=int, default=8000, help="default: %(default)s")
    served.add_argument("--grpc-port", type=int, default=8001, help="default: %(default)s")
    served.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics (default: %(default)s)")

    exported = _served_packages_command(commands, "export-triton", "write packages as a Triton model repository "
                                        "(NVIDIA's Triton container serves it unchanged)", export_command,
                                        "instances per model; on GPUs, one per GPU", "there")
    exported.add_argument("repository", metavar="DIR", help="the model repository (made, or added to)")

    listing_models = commands.add_parser("models", help="the models a server serves, with their labels")
    listing_models.add_argument("--server", required=True, metavar="URL", help="http://host:port")
    listing_models.add_argument("--json", action="store_true", help="print a JSON document instead of text")
    listing_models.set_defaults(command=models_command)

    environments = commands.add_parser("env", help="environments made for packages: make, list, remove")
    environment_commands = _Commands(environments.add_subparsers(required=True, metavar="ACTION"))
    _add_common_options(_package_command(environment_commands, "make", "make (or find) a package's environment",
                                         _make_environment, "MONAI Bundle, MONAI Deploy app or TorchScript file"))
    listing = environment_commands.add_parser("list", help="the made environments with their disk use")
    listing.add_argument("--json", action="store_true", help="print a JSON document instead of text")
    listing.set_defaults(command=_list_environments)
    remove = environment_commands.add_parser("remove", help="remove made environments")
    remove.add_argument("names", nargs="*", metavar="NAME", help="as env list prints them")
    remove.add_argument("--all", action="store_true", help="remove every made environment")
    remove.set_defaults(command=_remove_environments)

    zoo = commands.add_parser("zoo", help="bundles of the MONAI Model Zoo: list, download")
    zoo_commands = _Commands(zoo.add_subparsers(required=True, metavar="ACTION"))
    zoo_listing = zoo_commands.add_parser("list", help="the bundles the Model Zoo's index lists, newest version first")
    zoo_listing.add_argument("--json", action="store_true", help="print a JSON document instead of text")
    zoo_listing.set_defaults(command=zoo_list_command)
    zoo_download = zoo_commands.add_parser("download", help="download a bundle into the cache; prints its folder")
    zoo_download.add_argument("name", help="as zoo list prints it")
    zoo_download.add_argument("--version", help="default: the newest")
    zoo_download.set_defaults(command=zoo_download_command)
    for zoo_command in (zoo_listing, zoo_download):
        zoo_command.add_argument("--index", metavar="URL", help="the index to read, in the Model Zoo's format "
                                 "(default: $MONAIDEPLOYER_ZOO_INDEX, else the Model Zoo's own)")

    package = commands.add_parser("package", help="build a MAP image from a MONAI Deploy app (docker or podman)")
    package.add_argument("app", help="MONAI Deploy app: a folder with app.py or __main__.py, or a .py file")
    package.add_argument("--base", required=True, help="base image that has the app's Python and packages")
    package.add_argument("--tag", required=True, help="name of the image to build")
    package.add_argument("--runtime", choices=("podman", "docker"), help="default: the first that answers")
    package.add_argument("--model", help="the model the app gets with -m (default: the one in the app's folder)")
    package.add_argument("--python", default="python3", help="the app's Python in the base image (default: python3)")
    package.set_defaults(command=_package)
    return parser


def _served_packages_command(commands, name: str, summary: str, handler, instances_help: str, where: str):
    """A subcommand that serves packages, or writes them to be served: their models' instances and device."""
    parser = commands.add_parser(name, help=summary)
    parser.add_argument("packages", nargs="+", metavar="PACKAGE", help=PACKAGE_HELP)
    parser.add_argument("--instances", type=int, default=1, metavar="N", help=f"{instances_help} (default: 1)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the models run")
    parser.add_argument("--trust", action="store_true",
                        help=f"take bundles and Deploy apps even if not trusted before (their code runs {where})")
    _add_common_options(parser, json=False)
    parser.set_defaults(command=handler)
    return parser


def _package_command(commands, name: str, summary: str, handler, package_help: str = PACKAGE_HELP):
    """A subcommand whose first argument is a model package."""
    parser = commands.add_parser(name, help=summary)
    parser.add_argument("package", help=package_help)
    parser.set_defaults(command=handler)
    return parser


class _Commands:
    """Subcommands that each take ``--verbose`` too (after the command name, where users put it)."""

    def __init__(self, subparsers):
        self._subparsers = subparsers

    def add_parser(self, name: str, **options) -> argparse.ArgumentParser:
        parser = self._subparsers.add_parser(name, **options)
        parser.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                            help="print the library's log on stderr")
        return parser


def _program() -> str:
    """The name help shows: how this process was started (``python -m`` runs this file as ``__main__.py``)."""
    return "python -m MonaiDeployerLib" if os.path.basename(sys.argv[0]) == "__main__.py" else "monaideployer"


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of a command that runs a package: where and how it runs."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    parser.add_argument("--cold", action="store_true",
                        help="MONAI Deploy app: python app.py -i -o -m in a new process; MAP: a new container "
                             "(default: warm, the app imported once in the worker or in one kept container)")
    parser.add_argument("--input-format", choices=("nifti", "dicom"),
                        help="MONAI Deploy app or MAP: hand it NIfTI or a DICOM series "
                             "(default: what its app.yaml, manifest or code says)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="stop a run that has not finished after this long (its processes too)")
    parser.add_argument("--made-environment", action="store_true",
                        help="run in a virtual environment made for the package from its metadata or "
                             "requirements.txt (made on first use over --python's packages, then reused; see: env "
                             "list)")
    parser.add_argument("--trust", action="store_true",
                        help="run a bundle or Deploy app even if not trusted before: its configs or code are Python "
                             "that runs with your permissions, so use this only for packages from a source you trust")
    _add_common_options(parser)


def _add_common_options(parser: argparse.ArgumentParser, json: bool = True) -> None:
    parser.add_argument("--mode", default="auto", choices=("auto", *MODES), help="deployment mode (default: detect)")
    parser.add_argument("--python", help="Python for the worker process (default: this one)")
    parser.add_argument("--runtime", choices=("podman", "docker"),
                        help="MAP: the container runtime (default: the first of podman, docker that answers)")
    parser.add_argument("--entry-point", action="store_true",
                        help="an image without MAP manifests: run its own entry point anyway (cold), with the volume "
                             "in /var/holoscan/input and its labelmaps read from /var/holoscan/output")
    parser.add_argument("--model", help="MONAI Deploy app: the model it gets with -m (default: the one in the package)")
    if json:
        parser.add_argument("--json", action="store_true", help="print a JSON document instead of text")


def _inspect(arguments) -> int:
    package = open_package(arguments.package, arguments.mode, model=arguments.model, runtime=arguments.runtime,
                           entry_point=arguments.entry_point)
    if package.kind.own_environment:  # described from its image, not against the worker
        return _inspect_image(arguments, package)
    with Runner(python=arguments.python) as runner:
        environment = runner.environment()
        problems = runner.check_requirements(package)
    if arguments.json:
        print(json.dumps({**package.to_dict(), "worker_python": environment["executable"],
                          "trusted": TrustList().is_trusted(package) if package.content_hash else None,
                          "requirement_problems": problems}, indent=2))
        return 0
    print(f"{package.name} {package.version}".rstrip())
    print(f"  mode:         {package.mode}")
    print(f"  path:         {package.path}")
    if package.description:
        print(f"  description:  {package.description}")
    trusted = TrustList().is_trusted(package)
    for heading, text in package_facts(package, trusted):
        print(f"  {heading + ':':14s}{text}")
    labels = ", ".join(f"{value}={name}" for value, name in sorted(package.labels.items()))
    print(f"  labels:       {labels or 'not declared'}")
    for name, specifier in package.requirements.items():
        installed = environment["packages"].get(normalise_name(name), "missing")
        print(f"  requires:     {name}{specifier} (worker has {installed})")
    for problem in problems:
        print(f"  PROBLEM:      {problem}")
    return 0


def _package(arguments) -> int:
    tag = package_app(arguments.app, arguments.base, arguments.tag, arguments.runtime, arguments.model,
                      arguments.python)
    print(f"built {tag}")
    return 0


def _inspect_image(arguments, package) -> int:
    """A MAP's labels, manifests and resources, and whether its CUDA can run here, before any run."""
    facts = package.kind.inspect(package)
    verdict = facts.verdict()
    if arguments.json:
        print(json.dumps({"reference": facts.reference, "title": facts.title, "version": facts.version,
                          "input": {"path": facts.input_path, "formats": facts.input_formats},
                          "output": {"path": facts.output_path, "formats": facts.output_formats},
                          "resources": facts.resources, "cuda": facts.cuda,
                          "labels": {str(value): name for value, name in facts.labels.items()},
                          "verdict": {"kind": verdict.kind, "text": verdict.text}}, indent=2))
        return 0
    print(f"{facts.title} {facts.version}".rstrip())
    print(f"  mode:         {package.mode}")
    for heading, text in describe_map(facts, verdict):
        print(f"  {heading + ':':14s}{text}")
    return 0


def _run(arguments) -> int:
    if arguments.server:
        return _run_on_server(arguments)
    package = _open_to_run(arguments)
    check_output(arguments.output, overlapping_segments(package))
    volume = stack_channels([read_volume(path) for path in arguments.inputs], arguments.inputs)
    python, made = _worker_python(arguments, package)
    with Runner(python=python, device=arguments.device) as runner:
        result = runner.run(package, volume, timeout=arguments.timeout, trust=arguments.trust)
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        # while the runner is open: if this process is killed mid-write, its worker removes the partial file
        write_volume(arguments.output, result.labelmap, result.labels, result.colors, ledger=runner.private_folder)
        others = [write_volume(beside(arguments.output, index), other.labelmap, other.labels,
                               ledger=runner.private_folder) for index, other in enumerate(result.others, start=2)]
    if made is not None and made.made_now:
        result.timings = {"make_environment": made.seconds, **result.timings}
    return _report_run(arguments, result, package.name, package.mode, others)


def _run_on_server(arguments) -> int:
    with RemoteRunner(arguments.server) as runner:
        model = runner.ready(_served_package(arguments))
        check_output(arguments.output, overlapping_segments(model))
        volume = stack_channels([read_volume(path) for path in arguments.inputs], arguments.inputs)
        result = runner.run(model, volume, timeout=arguments.timeout)
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        write_volume(arguments.output, result.labelmap, result.labels, result.colors, ledger=runner.private_folder)
    return _report_run(arguments, result, model.name, model.mode, [])


def _served_package(arguments):
    """A served model's name, or a package's path opened as serve opened it (--mode, --model...), so that its
    content hash matches."""
    return _open_to_run(arguments) if os.path.exists(arguments.package) else arguments.package


def _report_run(arguments, result, package_name: str, mode: str, others: list) -> int:
    """What a finished run wrote, its voxels per label and timings: as text, or one JSON document."""
    counts = voxel_counts(result)
    if arguments.json:
        print(json.dumps({"output": arguments.output, "others": others, "package": package_name, "mode": mode,
                          "labels": {str(value): name for value, name in result.labels.items()},
                          "overlapping": result.overlapping,
                          "voxels": {str(value): count for value, count in counts.items()},
                          "timings": result.timings, "notes": result.notes}, indent=2))
        return 0
    note = " (the segments overlap: a voxel may count in several)" if result.overlapping else ""
    print(f"wrote {arguments.output}{note}")
    for value, name in sorted(result.labels.items()):
        print(f"  {value} {name}: {counts[value]} voxels")
    for path, other in zip(others, result.others, strict=True):
        print(f"wrote {path} (the app's {other.name})")
    print("  timings: " + ", ".join(f"{stage} {seconds:.3f} s" for stage, seconds in result.timings.items()))
    return 0


def _batch(arguments) -> int:
    """Every case through warm workers; a failing case is reported and the others go on. Exit 1 if any failed."""
    if arguments.jobs < 1:
        raise MonaiDeployerError("--jobs must be 1 or more")
    package = RemoteRunner(arguments.server).ready(_served_package(arguments)) if arguments.server else \
        _open_to_run(arguments)
    cases = find_cases(arguments.inputs, outside=arguments.output_dir)
    outputs = CaseOutputs(arguments.output_dir, arguments.suffix)
    outputs.check(package, cases)
    if arguments.server:  # each job one case in flight to the server (or to the balancer in front of several)
        runners = [RemoteRunner(arguments.server) for _ in range(arguments.jobs)]
    else:
        python, _made = _worker_python(arguments, package)
        runners = [Runner(python=python, device=arguments.device, threads=threads_per_job(arguments.jobs))
                   for _ in range(arguments.jobs)]
    report = BatchReport(len(cases), arguments.json)
    interrupted = False
    try:
        to_run = []
        for case in cases:
            if arguments.skip_existing and os.path.exists(outputs.target(case)):
                report.skipped(case, outputs.target(case))
            else:
                to_run.append(case)
        if to_run:
            with Batch(runners, package, to_run, arguments.trust, arguments.timeout) as batch:
                notes = set()
                for outcome in batch.outcomes(idle=lambda: report.running(batch.in_flight())):
                    _write_case(outcome, outputs, report, runners[0].private_folder, notes)
    except KeyboardInterrupt:  # the case in flight is stopped and cleaned up; finished outputs are whole
        interrupted = True
    finally:
        report.close()
        for runner in runners:
            runner.close()
    report.summary(interrupted)
    if interrupted:
        print("error: interrupted; the finished outputs are whole: run again with --skip-existing to do the rest",
              file=sys.stderr)
        return 130
    return 1 if report.failed else 0


def _write_case(outcome, outputs: CaseOutputs, report: BatchReport, ledger: str, notes: set) -> None:
    if not outcome.ok:
        report.finished(outcome)
        return
    for note in outcome.result.notes:
        if note not in notes:
            report.note(note)
            notes.add(note)
    try:
        report.finished(outcome, outputs.write(outcome, ledger=ledger))
    except MonaiDeployerError as error:
        report.finished(outcome, error=error)


def _open_to_run(arguments):
    return open_package(arguments.package, arguments.mode, model=arguments.model,
                        launch="cold" if arguments.cold else "warm", input_format=arguments.input_format,
                        runtime=arguments.runtime, entry_point=arguments.entry_point)


def _worker_python(arguments, package) -> tuple:
    """The worker's Python: --python's, or the environment made for the package (made now if need be)."""
    if not arguments.made_environment:
        return arguments.python, None
    made = make_environment(package, arguments.python, progress=lambda line: print(line, file=sys.stderr))
    return made.python, made


def _make_environment(arguments) -> int:
    package = open_package(arguments.package, arguments.mode, model=arguments.model)
    made = make_environment(package, arguments.python, progress=lambda line: print(line, file=sys.stderr))
    print(json.dumps({"python": made.python, "made_now": made.made_now}) if arguments.json else made.python)
    return 0


def _list_environments(arguments) -> int:
    found = list_environments()
    if arguments.json:
        print(json.dumps([{"name": made.name, "package": made.package, "requirements": made.requirements,
                           "ready": made.ready, "created": made.created, "bytes": made.disk_bytes(),
                           "python": made.python} for made in found], indent=2))
        return 0
    for made in found:
        state = f"made {made.created}" if made.ready else "half-made (an install was interrupted)"
        print(f"{made.name}  {made.disk_bytes() / 2**20:.1f} MiB  {state}  {' '.join(made.requirements)}")
    if not found:
        print("no made environments")
    return 0


def _remove_environments(arguments) -> int:
    names = [made.name for made in list_environments()] if arguments.all else arguments.names
    if not names:
        raise MonaiDeployerError("name the environments to remove (see: env list), or pass --all")
    for name in names:
        remove_environment(name)
        print(f"removed {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
