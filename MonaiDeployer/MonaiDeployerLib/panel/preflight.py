"""The decisions before a run, without dialogs: the package to run, whether it is trusted, the Python it runs in,
what must be installed there first.

The panel passes its dialogs in as ``Questions`` and its installer as a function; a script or a test passes
answers. Every way a run is not started raises ``NotStarted`` with the line the user reads.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..environment.requirements import missing_packages
from ..errors import MonaiDeployerError, NotAMapError
from ..packages import PackageInfo, open_package

logger = logging.getLogger(__name__)


class NotStarted(MonaiDeployerError):
    """The run was not started: the user said no (``failed`` False), or what it needs is missing or could not be
    installed (``failed`` True). The message says which."""

    def __init__(self, message: str, failed: bool = False):
        super().__init__(message)
        self.failed = failed


@dataclass(frozen=True)
class Choice:
    """What the panel names: the package and how to run it. "auto" and "" leave a setting to the package."""

    package_path: str
    mode: str = "auto"
    device: str = "auto"
    worker_python: str = ""
    app_model: str = ""
    app_launch: str = "warm"
    app_input_format: str = "auto"
    container_runtime: str = "auto"
    made_environment: bool = False
    server_url: str = ""  # a server that runs the model (empty: this computer); package_path is then a served model
    zoo_index: str = ""  # the index a zoo: package is looked up in ("": the environment's, else the Model Zoo's)

    def open(self, entry_point: bool = False) -> PackageInfo:
        """The package, with its Deploy app and MAP options; raises MonaiDeployerError when it is not usable."""
        return open_package(self.package_path.strip(), mode=None if self.mode == "auto" else self.mode,
                            model=self.app_model.strip() or None, launch=self.app_launch,
                            input_format=None if self.app_input_format == "auto" else self.app_input_format,
                            runtime=None if self.container_runtime == "auto" else self.container_runtime,
                            entry_point=entry_point, zoo_index=self.zoo_index or None)


class Questions(Protocol):
    """What the user is asked before a run; each returns the answer (the panel: a dialog)."""

    def trust(self, package: PackageInfo) -> bool: ...

    def run_entry_point(self, reason: str) -> bool: ...

    def install(self, packages: Sequence[str]) -> bool: ...

    def run_anyway(self, package: PackageInfo, problems: Sequence[str]) -> bool: ...


@dataclass
class Ready:
    """What to start: the package and the worker Python it runs in."""

    package: PackageInfo
    python: str


def same_python(python: str, default: str) -> bool:
    """True when ``python`` (empty: the default) is the default interpreter."""
    python = python.strip()
    return not python or os.path.realpath(python) == os.path.realpath(default)


class Preflight:
    """Prepares runs for one panel session; remembers the installs the user declined in it (asked once).

    ``runner_for(python, device)`` gives the warm runner; ``install(packages)`` installs into ``default_python``
    (raising when it fails); ``trust_list`` remembers trusted packages across sessions;
    ``make_environment(package, python, progress)`` makes a package's own environment; ``log(line)`` gets what the
    user should read in the log; ``busy()`` is a context manager around the steps that wait (a wait cursor).
    """

    def __init__(self, runner_for: Callable, default_python: str, install: Callable, trust_list,
                 make_environment: Callable, log: Callable[[str], None], tr: Callable[[str], str] = str,
                 busy: Callable = contextlib.nullcontext):
        self._runner_for = runner_for
        self._default_python = default_python
        self._install = install
        self._trust_list = trust_list
        self._make_environment = make_environment
        self._log = log
        self._tr = tr
        self._busy = busy
        self.declined: set = set()

    def prepare(self, choice: Choice, questions: Questions) -> Ready:
        """Open the package, ask what must be asked, make and fill the environment; raises NotStarted."""
        tr = self._tr
        package = choice.open()
        package = self._inspected(choice, package, questions)
        if not self.is_trusted(package):
            if not questions.trust(package):
                raise NotStarted(tr("Not started: the package is not trusted."))
            self._trust_list.trust(package)
        python = choice.worker_python.strip()
        if choice.made_environment and not package.kind.own_environment:
            made = self._make_environment(package, python or self._default_python, self._log)
            if made.made_now:
                self._log(tr("Made the environment {name} in {seconds:.0f} s.").format(
                    name=made.name, seconds=made.seconds))
            python = made.python
        self._fill_environment(package, python, choice.device, questions)
        return Ready(package, python)

    def is_trusted(self, package: PackageInfo) -> bool:
        """True for packages that run no code of their own, and for those the user has trusted."""
        return not package.content_hash or self._trust_list.is_trusted(package)

    def _inspected(self, choice: Choice, package: PackageInfo, questions: Questions) -> PackageInfo:
        """The package once what its kind reads before a run (a MAP's image) has been read; an image that is not a
        MAP runs through its own entry point if the user agrees."""
        try:
            with self._busy():
                package.kind.inspect(package)
            return package
        except NotAMapError as error:
            if questions.run_entry_point(str(error)):
                return choice.open(entry_point=True)
        raise NotStarted(self._tr("Not started: the image is not a MONAI Application Package."))

    def _fill_environment(self, package: PackageInfo, python: str, device: str, questions: Questions) -> None:
        """The worker's environment can run the package, after offering to install what it lacks."""
        tr = self._tr
        with self._busy():
            installed = self._runner_for(python, device).environment()["packages"]
        missing = missing_packages(package.kind.worker_imports, package.requirements, installed)
        if missing:
            self._install_missing(missing, python, questions)
        with self._busy():
            problems = self._runner_for(python, device).check_requirements(package)  # a new worker after an install
        for problem in problems:
            self._log(problem)
        if problems and not questions.run_anyway(package, problems):
            raise NotStarted(tr("Not started: the package's requirements are not met (see the log)."))

    def _install_missing(self, missing: list, python: str, questions: Questions) -> None:
        tr = self._tr
        names = ", ".join(missing)
        if not same_python(python, self._default_python):
            raise NotStarted(tr("The worker Python {python} lacks {packages}. Install them in that environment, tick "
                                "'Environment made for the package', or leave 'Worker Python' empty to use Slicer's "
                                "own Python.").format(python=python, packages=names), failed=True)
        if tuple(missing) in self.declined:
            raise NotStarted(tr("{packages} not installed (you declined), so the model cannot run.").format(
                packages=names), failed=True)
        if not questions.install(missing):
            self.declined.add(tuple(missing))
            raise NotStarted(tr("{packages} not installed, so the model cannot run.").format(packages=names),
                             failed=True)
        try:
            self._install(missing)
        except Exception as error:  # pip and the PyTorch extension report failures as assorted exceptions
            logger.exception("Installing %s failed", names)
            raise NotStarted(tr("Installing {packages} failed: {error}").format(packages=names, error=error),
                             failed=True) from error
        self._log(tr("Installed {packages}.").format(packages=names))
