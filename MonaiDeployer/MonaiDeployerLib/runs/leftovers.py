"""What a killed process leaves behind (patient data in temp folders, half-written outputs), found and removed.

A runner keeps its runs in a private temp folder that names its owner (``owner.json``: process id,
start time, machine) and the container runtimes its MAPs used. A half-written output file is noted
there while it is written. When the owner is killed (out of memory, a crash of Slicer, ``kill -9``)
its worker removes that folder, those files and the containers named after the folder; when the
worker was killed too, the next runner on the machine finds the folder of a dead owner and does it.

Only this user's own private folders (a real folder, mode 0700, as ``mkdtemp`` makes them) are
judged, and an owner is judged dead only on this machine, since this boot, in this process
namespace: in doubt a folder stays.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import sys
import tempfile
import time

from ..environment.containers import RUNTIMES, remove_containers_of

logger = logging.getLogger(__name__)

PREFIX = "monaideployer-"
OWNER_FILE = "owner.json"
PARTIAL_OUTPUTS = "partial-outputs"  # a file per output being written, holding its partial file's path
PARTIAL_PREFIX = ".partial-"  # how volume.write_volume names a file it has not finished
CLEANER_WAIT_SECONDS = 60


def make_private_folder(parent: str | None = None) -> str:
    """A new private folder owned by this process in ``parent`` (default: the temp folder), after removing those
    there of owners that have died."""
    remove_stale_folders(parent)
    folder = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
    _write_owner(folder, {**process_identity(os.getpid()), "runtimes": []})
    return folder


def note_runtime(folder: str, runtime: str) -> None:
    """Remember that containers named after ``folder`` may exist in ``runtime`` ("podman" or "docker")."""
    owner = read_owner(folder)
    name = os.path.basename(runtime)
    if owner is not None and name in RUNTIMES and name not in owner["runtimes"]:
        _write_owner(folder, {**owner, "runtimes": [*owner["runtimes"], name]})


def read_owner(folder: str) -> dict | None:
    """The owner record of one of this user's private folders, or None (not ours, or not a private folder)."""
    try:
        info = os.lstat(folder)
        with open(os.path.join(folder, OWNER_FILE), encoding="utf-8") as stream:
            owner = json.load(stream)
    except (OSError, ValueError):
        return None
    if not stat.S_ISDIR(info.st_mode) or stat.S_IMODE(info.st_mode) & 0o077 or not _ours(info):
        return None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return None
    runtimes = owner.get("runtimes")
    owner["runtimes"] = [name for name in runtimes if name in RUNTIMES] if isinstance(runtimes, list) else []
    return owner


@contextlib.contextmanager
def noted_partial(folder: str | None, partial: str):
    """While the block writes ``partial``, it is listed in ``folder`` (a runner's private folder; None: not listed).

    The list is only made inside a folder that still exists, and goes when it is empty again.
    """
    if folder is None:
        yield
        return
    notes = os.path.join(folder, PARTIAL_OUTPUTS)
    with contextlib.suppress(FileExistsError):
        os.mkdir(notes, 0o700)
    handle, note = tempfile.mkstemp(dir=notes)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(os.path.abspath(partial))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(note)
        with contextlib.suppress(OSError):
            os.rmdir(notes)


def remove_folder(folder: str) -> None:
    """Remove a private folder and the partial outputs it lists (only files named as partial outputs)."""
    notes = os.path.join(folder, PARTIAL_OUTPUTS)
    for name in os.listdir(notes) if os.path.isdir(notes) else []:
        partial = ""
        with contextlib.suppress(OSError), open(os.path.join(notes, name), encoding="utf-8") as stream:
            partial = stream.read().strip()
        if partial and os.path.basename(partial).startswith(PARTIAL_PREFIX):
            with contextlib.suppress(OSError):
                os.remove(partial)
    shutil.rmtree(folder, ignore_errors=True)


def remove_stale_folders(parent: str | None = None) -> list:
    """Remove this user's private folders (and their containers) whose owners are no longer running; their paths."""
    parent = parent or tempfile.gettempdir()
    folders = []
    with contextlib.suppress(OSError), os.scandir(parent) as entries:
        folders = [entry.path for entry in entries if entry.name.startswith(PREFIX)]
    removed = []
    for folder in folders:
        owner = read_owner(folder)
        if owner is None or owner_alive(owner):
            continue
        remove_run_traces(folder, owner["runtimes"])
        logger.info("Removed what a run of process %s (no longer running) left: %s", owner.get("pid"), folder)
        removed.append(folder)
    return removed


def remove_run_traces(folder: str, runtimes: list) -> None:
    """Every container named after ``folder`` in each runtime ("podman", "docker"), then the folder."""
    if runtimes:
        for name in runtimes:
            path = shutil.which(name)
            if path is not None:
                remove_containers_of(path, folder)
    remove_folder(folder)


def process_identity(pid: int) -> dict:
    """What tells this process from another with the same id: machine, boot, process namespace, start time."""
    return {"pid": pid, "host": socket.gethostname(), "boot": _boot_id(), "namespace": _pid_namespace(),
            "started": _start_time(pid)}


def owner_alive(owner: dict) -> bool:
    """Whether the process that wrote ``owner`` may still run; True where that cannot be told for sure.

    An owner of another machine, boot or process namespace (a temp folder shared over the network or
    with a container) is not judged; a reused process id has another start time.
    """
    here = process_identity(os.getpid())
    if any(owner.get(key) != here[key] for key in ("host", "boot", "namespace")):
        return True
    started = _start_time(owner["pid"])
    if started is None:
        return _pid_exists(owner["pid"])
    return owner.get("started") in (None, started)


def remove_owned(folders) -> None:
    """Each private folder, with the containers named after it in the runtimes its owner noted."""
    for folder in folders:
        owner = read_owner(folder)
        remove_run_traces(folder, owner["runtimes"] if owner else [])


def clean_after(pid: int, folders: list) -> None:
    """Wait until process ``pid``'s group has ended (at most a minute), then ``remove_owned(folders)``.

    Run detached by a worker whose owner died: the worker ends its own process group at once, so that
    nothing it started can still write into the folders or start a container once they are removed.
    """
    deadline = time.monotonic() + CLEANER_WAIT_SECONDS
    while time.monotonic() < deadline and _group_exists(pid):
        time.sleep(0.05)
    remove_owned(folders)


def start_cleaner(library_parent: str, folders: list) -> None:
    """``clean_after`` this process, in a process of its own that outlives it."""
    import subprocess

    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from MonaiDeployerLib.runs.leftovers import clean_after; "
            "clean_after(int(sys.argv[2]), json.loads(sys.argv[3]))")
    subprocess.Popen([sys.executable, "-c", code, library_parent, str(os.getpid()), json.dumps(folders)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def _ours(info: os.stat_result) -> bool:
    return not hasattr(os, "getuid") or info.st_uid == os.getuid()


def _group_exists(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, AttributeError):
        return _pid_exists(pid)
    return True


def _pid_exists(pid: int) -> bool:
    if os.name != "posix":
        try:
            import psutil
        except ImportError:
            return True  # os.kill would end the process on Windows: nothing can be told, so it is alive
        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int):
    """Linux: clock ticks since boot (``/proc/PID/stat``), unchanged when the wall clock is set; else psutil's."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stream:
            return int(stream.read().rsplit(")", 1)[1].split()[19])
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else _psutil_start_time(pid)
    except (OSError, ValueError, IndexError):
        return _psutil_start_time(pid)


def _psutil_start_time(pid: int):
    try:
        import psutil

        return round(psutil.Process(pid).create_time())
    except Exception:  # no psutil, no such process, or it cannot tell: the process id alone identifies the owner
        return None


def _boot_id() -> str:
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id", encoding="utf-8") as stream:
        return stream.read().strip()
    return ""


def _pid_namespace() -> str:
    with contextlib.suppress(OSError, AttributeError):
        return os.readlink("/proc/self/ns/pid")
    return ""


def _write_owner(folder: str, owner: dict) -> None:
    partial = os.path.join(folder, f".{OWNER_FILE}.new")
    with open(partial, "w", encoding="utf-8") as stream:
        json.dump(owner, stream)
    os.replace(partial, os.path.join(folder, OWNER_FILE))
