"""Which packages the user trusts to run, keyed by their content.

A MONAI Bundle's configs and a MONAI Deploy app are Python: running one runs whatever its author
wrote. A package is trusted once, by its content hash; changing any file makes it a new package.
"""

from __future__ import annotations

import hashlib
import json
import os

from ..environment.home import home_folder, write_json
from ..errors import PackageError

HASH_CHUNK = 1 << 20
UNTRUSTED_EXPLANATION = (
    "runs code: its configs or scripts are Python that executes with your permissions. "
    "Run it only if you trust its source; then pass --trust (command line) or trust=True (Python API), "
    "or answer yes when Slicer's panel asks"
)
_hash_memo = {}


def content_hash(path: str) -> str:
    """SHA-256 over a file, or over a folder's relative file names and contents (caches left out)."""
    files = [path] if os.path.isfile(path) else _folder_files(path)
    statuses = [os.stat(name) for name in files]
    signature = tuple((name, status.st_mtime_ns, status.st_size) for name, status in zip(files, statuses, strict=True))
    if _hash_memo.get(path, (None,))[0] == signature:
        return _hash_memo[path][1]
    digest = hashlib.sha256()
    for name in files:
        if name != path:
            digest.update(os.path.relpath(name, path).replace(os.sep, "/").encode() + b"\0")
        with open(name, "rb") as stream:
            while chunk := stream.read(HASH_CHUNK):
                digest.update(chunk)
    _hash_memo[path] = (signature, digest.hexdigest())
    return digest.hexdigest()


def _folder_files(folder: str) -> list:
    found = []
    for parent, folders, names in os.walk(folder):
        folders[:] = sorted(name for name in folders if name != "__pycache__" and not name.startswith("."))
        found.extend(os.path.join(parent, name) for name in sorted(names) if not name.endswith(".pyc"))
    return found


class TrustList:
    """The content hashes the user agreed to run, in ``trusted.json`` under the home folder."""

    def __init__(self, folder: str | None = None):
        self.path = os.path.join(folder or home_folder(), "trusted.json")

    def _read(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as stream:
                document = json.load(stream)
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError):
            return {}  # an unreadable list trusts nothing; the next trust() rewrites it
        return document if isinstance(document, dict) else {}

    def is_trusted(self, package) -> bool:
        return bool(package.content_hash) and package.content_hash in self._read()

    def trust(self, package) -> None:
        """Remember that the user trusts this exact content (written atomically)."""
        entries = self._read()
        entries[package.content_hash] = {"name": package.name, "path": package.path}
        write_json(self.path, entries, indent=2)

    def check(self, package, trust: bool = False) -> None:
        """Refuse a package that runs code unless the user trusted it before, or ``trust`` says so for this run."""
        if package.content_hash and not trust and not self.is_trusted(package):
            licence = package.settings.licence
            raise PackageError(f"{package.name} is not trusted yet. A {package.mode} package {UNTRUSTED_EXPLANATION}"
                               + (f". Its licence: {licence}" if licence else ""))
