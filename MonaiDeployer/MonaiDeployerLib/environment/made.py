"""Environments made for a package: a virtual environment with what its metadata asks for, made once and kept.

A bundle made with MONAI 1.4 gets ``monai==1.4.0``; a Deploy app gets its ``requirements.txt``.
The environment lies over the base Python's own packages (a ``.pth`` file puts them after its
own), so pip installs only what the base lacks or has in another version: an installed torch
that satisfies the requirement is reused, not downloaded again. Each lives in
``$MONAIDEPLOYER_HOME/environments/<name>-<hash>``, the hash of its requirements and base Python;
a marker file written after a successful install is what makes it usable, so a failed or
interrupted install is never taken for a made environment.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

from ..errors import PackageError
from .home import home_folder
from .requirements import normalise_name

logger = logging.getLogger(__name__)
MARKER = "monaideployer-environment.json"
# Packages Slicer's own Python ships and its modules rely on: installing into Slicer never replaces them.
SLICER_SHIPPED = ("numpy", "scipy", "SimpleITK", "requests", "urllib3", "certifi", "idna", "charset-normalizer",
                  "pydicom", "dicomweb-client", "pillow", "packaging", "pip", "setuptools", "wheel", "six")
BASE_PACKAGES_FILE = "zz_monaideployer_base.pth"  # "zz": read after anything else in the folder
PIP_LINES_SHOWN = 4
DEPLOY_SDK = "monai-deploy-app-sdk"


@dataclass
class MadeEnvironment:
    """A made environment: ``python`` runs a worker in it; ``made_now`` tells whether this call installed it."""

    folder: str
    python: str
    requirements: list
    package: str = ""
    base: str = ""
    created: str = ""
    made_now: bool = False
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return os.path.basename(self.folder)

    @property
    def ready(self) -> bool:
        return os.path.isfile(os.path.join(self.folder, MARKER))

    def disk_bytes(self) -> int:
        total = 0
        for parent, _, names in os.walk(self.folder):
            for name in names:
                path = os.path.join(parent, name)
                if not os.path.islink(path):
                    total += os.path.getsize(path)
        return total


def environments_folder() -> str:
    return os.path.join(home_folder(), "environments")


def requirements_for(package) -> list:
    """What the package's environment installs, as pip requirement strings: what its kind asks for
    (``PackageKind.environment_requirements``; a bundle pins the MONAI it was made with)."""
    requirements = package.kind.environment_requirements(package)
    return sorted(f"{name}{specifier}" for name, specifier in requirements.items())


def environment_for(package, base_python: str | None = None) -> MadeEnvironment:
    """The package's environment as it is (made or not): where it is, what it holds."""
    base = base_python or sys.executable
    requirements = requirements_for(package)
    digest = hashlib.sha256(json.dumps([os.path.realpath(base), requirements]).encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9]+", "-", package.name.lower()).strip("-")[:40] or "package"
    folder = os.path.join(environments_folder(), f"{slug}-{digest}")
    return MadeEnvironment(folder, _python_in(folder), requirements, package.name, base)


def make_environment(package, base_python: str | None = None, progress=None) -> MadeEnvironment:
    """The package's environment, made now unless it was made before; ``progress`` gets each line pip prints.

    A failed install raises PackageError with pip's last lines and removes what it made.
    """
    environment = environment_for(package, base_python)
    if environment.ready:
        return _read_marker(environment.folder)
    with _held_lock(environment.folder + ".lock"):  # Slicer and a batch run may ask at once: one makes it
        if environment.ready:
            return _read_marker(environment.folder)
        started = time.perf_counter()
        logger.info("Making the environment %s: %s", environment.name, " ".join(environment.requirements))
        shutil.rmtree(environment.folder, ignore_errors=True)  # an install that was interrupted
        try:
            _create_virtual_environment(environment, progress)
            _pip_install(environment, progress)
            _put_deploy_sdk_beside_monai(environment, progress)
            environment.created = datetime.datetime.now().isoformat(timespec="seconds")
            environment.seconds = time.perf_counter() - started
            _write_marker(environment)
        except BaseException:
            shutil.rmtree(environment.folder, ignore_errors=True)
            raise
    environment.made_now = True
    return environment


@contextlib.contextmanager
def _held_lock(path: str):
    """An exclusive lock on ``path`` between processes (POSIX ``flock``; elsewhere none), released by the OS
    if the holder dies."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as stream:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; two simultaneous first runs would both install
            yield
            return
        fcntl.flock(stream, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


def list_environments() -> list:
    """Every environment in the cache, made or left half-made by an interrupted install (``ready`` False)."""
    folder = environments_folder()
    if not os.path.isdir(folder):
        return []
    found = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            found.append(_read_marker(path) if os.path.isfile(os.path.join(path, MARKER))
                         else MadeEnvironment(path, _python_in(path), []))
    return found


def remove_environment(name: str) -> None:
    """Remove one cached environment by its folder name."""
    path = os.path.join(environments_folder(), name)
    if os.path.basename(os.path.normpath(name)) != name or not os.path.isdir(path):
        raise PackageError(f"no made environment called {name!r} (list them with: env list)")
    shutil.rmtree(path)
    with contextlib.suppress(FileNotFoundError):
        os.remove(path + ".lock")


def shipped_constraints(installed: dict, shipped=SLICER_SHIPPED) -> str:
    """A pip constraints file's text that keeps each shipped package at its installed version."""
    kept = {normalise_name(name) for name in shipped}
    return "".join(f"{name}=={version}\n" for name, version in sorted(installed.items()) if name in kept)


def needs_restart(requirements: list, imported_modules) -> list:
    """The requirements whose module this process has already imported: a new version takes a restart."""
    loaded = {normalise_name(name.split(".")[0]) for name in imported_modules}
    names = [re.split(r"[<>=!~\s\[]", requirement, maxsplit=1)[0] for requirement in requirements]
    return [name for name in names if normalise_name(name) in loaded]


def _create_virtual_environment(environment: MadeEnvironment, progress) -> None:
    _report(progress, f"making a virtual environment for {environment.package} over {environment.base}")
    _run([environment.base, "-m", "venv", "--without-pip", environment.folder], "making the virtual environment")
    own = _site_packages(environment.python)
    base = [path for path in _package_folders(environment.base) if path != own]
    with open(os.path.join(own, BASE_PACKAGES_FILE), "w", encoding="utf-8") as stream:  # their .pth files count too
        stream.write("".join(f"import site; site.addsitedir({path!r})\n" for path in base))


def _pip_install(environment: MadeEnvironment, progress) -> None:
    if not environment.requirements:
        return
    _report(progress, "installing " + " ".join(environment.requirements))
    _run(_pip_install_command(environment, *environment.requirements),
         f"installing {' '.join(environment.requirements)}", progress)


def _pip_install_command(environment: MadeEnvironment, *arguments: str) -> list:
    """pip of the base Python installing into the environment (``--python``), resolving against both."""
    return [environment.base, "-m", "pip", "--python", environment.python, "install", "--disable-pip-version-check",
            "--no-input", "--progress-bar", "off", *arguments]


def _put_deploy_sdk_beside_monai(environment: MadeEnvironment, progress) -> None:
    """The Deploy App SDK installs into ``monai/deploy``: an environment with a MONAI of its own needs the SDK
    there too, or ``monai.deploy`` is not found (the base's SDK sits in the base's ``monai`` folder)."""
    sdk = [requirement for requirement in environment.requirements if requirement.startswith(DEPLOY_SDK)]
    own = _site_packages(environment.python)
    own_monai = os.path.join(own, "monai")
    if not sdk or not os.path.isdir(own_monai) or os.path.isdir(os.path.join(own_monai, "deploy")):
        return
    version = _installed_version(environment.base, DEPLOY_SDK)
    requirement = f"{DEPLOY_SDK}=={version}" if version else sdk[0]
    _report(progress, f"installing {requirement} beside the environment's own MONAI")
    _run(_pip_install_command(environment, "--no-deps", "--ignore-installed", requirement), f"installing {requirement}",
         progress)


def _installed_version(python: str, name: str) -> str:
    script = ("import importlib.metadata as m, sys\n"
              "try: print(m.version(sys.argv[1]))\nexcept m.PackageNotFoundError: pass")
    return subprocess.run([python, "-c", script, name], capture_output=True, text=True, check=False).stdout.strip()


def _run(command: list, what: str, progress=None) -> None:
    lines = []
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as error:
        raise PackageError(f"{what} failed: cannot start {command[0]}: {error.strerror}") from error
    with process:
        for line in process.stdout:
            if line.strip():
                lines.append(line.rstrip())
                _report(progress, line.rstrip())
    if process.returncode != 0:
        raise PackageError(f"{what} failed: " + " | ".join(line.strip() for line in lines[-PIP_LINES_SHOWN:]))


def _site_packages(python: str) -> str:
    """The folder ``python`` installs packages into."""
    return _ask(python, "sysconfig.get_paths()['purelib']")


def _package_folders(python: str) -> list:
    """Every site-packages folder ``python`` imports packages from."""
    return _ask(python, "[p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))]")


def _ask(python: str, expression: str):
    """The value of ``expression`` (JSON-able) in ``python``."""
    finished = subprocess.run([python, "-c", f"import json, sys, sysconfig; print(json.dumps({expression}))"],
                              capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise PackageError(f"cannot ask {python} where its packages are: {finished.stderr.strip()[-300:]}")
    return json.loads(finished.stdout)


def _python_in(folder: str) -> str:
    return os.path.join(folder, "Scripts", "python.exe") if os.name == "nt" else os.path.join(folder, "bin", "python")


def _report(progress, line: str) -> None:
    if progress is not None:
        progress(line)


def _write_marker(environment: MadeEnvironment) -> None:
    with open(os.path.join(environment.folder, MARKER), "w", encoding="utf-8") as stream:
        json.dump({"package": environment.package, "requirements": environment.requirements,
                   "base": environment.base, "created": environment.created,
                   "install_seconds": round(environment.seconds, 1)}, stream, indent=2)


def _read_marker(folder: str) -> MadeEnvironment:
    with open(os.path.join(folder, MARKER), encoding="utf-8") as stream:
        document = json.load(stream)
    return MadeEnvironment(folder, _python_in(folder), document.get("requirements", []), document.get("package", ""),
                           document.get("base", ""), document.get("created", ""))
