"""What a killed process leaves behind (patient data in temp folders, half-written outputs), found and removed.

A runner keeps its runs in a private temp folder that names its owner (``owner.json``: process id
and start time) and the container runtimes its MAPs used. A half-written output file is noted
there while it is written. When the owner is killed (out of memory, a crash of Slicer, ``kill -9``)
its worker removes that folder and those files; when the worker was killed too, the next runner
on the machine finds the folder of a dead owner and removes it, with any container named after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

PREFIX = "monaideployer-"
OWNER_FILE = "owner.json"
PARTIAL_OUTPUTS = "partial-outputs"  # a file per output being written, holding its partial file's path
PARTIAL_PREFIX = ".partial-"  # how volume.write_volume names a file it has not finished


def make_private_folder() -> str:
    """A new private folder owned by this process, after removing those of owners that have died."""
    remove_stale_folders()
    folder = tempfile.mkdtemp(prefix=PREFIX)
    _write_owner(folder, {"pid": os.getpid(), "started": _start_time(os.getpid()), "runtimes": []})
    return folder


def note_runtime(folder: str, runtime: str) -> None:
    """Remember that containers named after ``folder`` may exist in ``runtime``, for whoever cleans up."""
    owner = read_owner(folder)
    if owner is not None and runtime not in owner["runtimes"]:
        _write_owner(folder, {**owner, "runtimes": [*owner["runtimes"], runtime]})


def read_owner(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, OWNER_FILE), encoding="utf-8") as stream:
            owner = json.load(stream)
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


@contextlib.contextmanager
def noted_partial(folder: str | None, partial: str):
    """While the block writes ``partial``, it is listed in ``folder`` (None: not listed)."""
    if folder is None:
        yield
        return
    notes = os.path.join(folder, PARTIAL_OUTPUTS)
    os.makedirs(notes, exist_ok=True)
    handle, note = tempfile.mkstemp(dir=notes)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(os.path.abspath(partial))
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(note)


def remove_folder(folder: str) -> None:
    """Remove a private folder and the partial outputs it lists (only files named as partial outputs)."""
    notes = os.path.join(folder, PARTIAL_OUTPUTS)
    for name in os.listdir(notes) if os.path.isdir(notes) else []:
        with contextlib.suppress(OSError), open(os.path.join(notes, name), encoding="utf-8") as stream:
            partial = stream.read().strip()
        if partial and os.path.basename(partial).startswith(PARTIAL_PREFIX):
            with contextlib.suppress(OSError):
                os.remove(partial)
    shutil.rmtree(folder, ignore_errors=True)


def remove_stale_folders(parent: str | None = None) -> list:
    """Remove the private folders (and their containers) of owners that are no longer running; their paths."""
    parent = parent or tempfile.gettempdir()
    removed, folders = [], []
    with contextlib.suppress(OSError), os.scandir(parent) as entries:
        folders = [entry.path for entry in entries if entry.name.startswith(PREFIX) and entry.is_dir()]
    for folder in folders:
        owner = read_owner(folder)
        if owner is None or owner_alive(owner):
            continue
        if owner["runtimes"]:
            from .containers import remove_containers_of

            for runtime in owner["runtimes"]:
                remove_containers_of(runtime, folder)
        remove_folder(folder)
        removed.append(folder)
    return removed


def owner_alive(owner: dict) -> bool:
    """Whether the process that wrote ``owner`` still runs (a reused process id has another start time).

    Where that cannot be told (Windows without psutil), the owner counts as alive: nothing is removed.
    """
    pid = owner["pid"]
    try:
        import psutil
    except ImportError:
        if os.name != "posix":
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # another user's: not ours to judge
        return True
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
    return owner.get("started") is None or abs(started - owner["started"]) < 1.0


def _start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # no psutil, or it cannot tell: the process id alone identifies the owner
        return None


def _write_owner(folder: str, owner: dict) -> None:
    partial = os.path.join(folder, f".{OWNER_FILE}.new")
    with open(partial, "w", encoding="utf-8") as stream:
        json.dump(owner, stream)
    os.replace(partial, os.path.join(folder, OWNER_FILE))
