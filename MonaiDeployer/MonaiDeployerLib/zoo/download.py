"""A Model Zoo archive into the cache, whole or not at all: streamed into a private folder of its own, its SHA-1
checked against the index before anything is unpacked, unpacked with the escape checks of any bundle zip, and moved
to ``$MONAIDEPLOYER_HOME/zoo/NAME/VERSION`` only then. A folder there is a whole bundle, so it is never fetched
again; what a killed download left is removed by the next one."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

from ..errors import Cancelled, PackageError
from ..packages.bundle_files import extract_bundle_archive
from ..runs import leftovers
from .catalogue import ZooArchive, version_key, why_unreachable, zoo_folder

CHUNK = 1 << 16
CONNECT_SECONDS, READ_SECONDS = 15, 60  # a server that stops sending for READ_SECONDS is given up
PROGRESS_SECONDS = 0.2  # how often progress is told


def bundle_folder(name: str, version: str) -> str:
    return os.path.join(zoo_folder(), name, version)


def downloaded_versions(name: str) -> list[str]:
    """The versions of ``name`` in the cache, newest first."""
    folder = os.path.join(zoo_folder(), name)
    versions = [entry for entry in (os.listdir(folder) if os.path.isdir(folder) else [])
                if os.path.isdir(os.path.join(folder, entry)) and not entry.startswith(".")]
    return sorted(versions, key=version_key, reverse=True)


def download_record(name: str, version: str) -> dict:
    """What the download of a cached version recorded (its source, checksum and size); {} when none."""
    try:
        with open(bundle_folder(name, version) + ".json", encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return {}


def download(archive: ZooArchive, progress=None, cancel: threading.Event | None = None) -> str:
    """The cached bundle folder of ``archive``, downloaded first when it is not there.

    ``progress(done_bytes, total_bytes_or_None, bytes_per_second)`` is called as it arrives; ``cancel`` set stops
    it (``Cancelled``), up to the moment the bundle is moved into the cache. Any failure is one line and leaves
    nothing in the cache.
    """
    target = bundle_folder(archive.name, archive.version)
    if os.path.isdir(target):
        return target
    cancel = cancel or threading.Event()
    os.makedirs(zoo_folder(), exist_ok=True)
    staging = leftovers.make_private_folder(zoo_folder())  # on the cache's disk: the last move is a rename
    try:
        zipped = os.path.join(staging, "archive.zip")
        size = _fetch(archive, zipped, progress, cancel)
        _stop_if(cancel, archive)
        unpacked = os.path.join(staging, "bundle")
        os.mkdir(unpacked)
        try:
            extract_bundle_archive(zipped, "zip", unpacked)
        except PackageError as error:
            raise PackageError(f"the Model Zoo archive of {archive.name} {archive.version} cannot be used: "
                               f"{str(error).replace(zipped, 'it')}") from None
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _stop_if(cancel, archive)
        try:
            os.replace(unpacked, target)
        except OSError:
            if not os.path.isdir(target):  # else another process put the same version there first
                raise
        _write_record(target, archive, size)
    finally:
        leftovers.remove_folder(staging)
    return target


def _fetch(archive: ZooArchive, path: str, progress, cancel: threading.Event) -> int:
    """The archive's bytes into ``path``, checked: all of them, and its SHA-1 the index's. Their number."""
    import requests

    what = f"{archive.name} {archive.version} from {archive.source}"
    digest, done, started, response = hashlib.sha1(usedforsecurity=False), 0, time.monotonic(), None
    try:
        with requests.get(archive.source, stream=True, timeout=(CONNECT_SECONDS, READ_SECONDS)) as response:
            if response.status_code != 200:
                raise PackageError(f"cannot download {what}: HTTP {response.status_code}")
            total = _length(response)
            told = 0.0
            with open(path, "wb") as stream:
                for chunk in response.iter_content(CHUNK):
                    _stop_if(cancel, archive)
                    stream.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    now = time.monotonic()
                    if progress is not None and now - told >= PROGRESS_SECONDS:
                        told = now
                        progress(done, total, done / max(now - started, 1e-6))
    except requests.RequestException as error:
        if response is None:
            raise PackageError(f"cannot download {what}: {why_unreachable(error)}") from None
        raise PackageError(f"the download of {what} was cut off after {done} bytes "
                           f"({type(error).__name__}); nothing was kept") from None
    if total is not None and done != total:
        raise PackageError(f"the download of {what} was cut off at {done} of {total} bytes; nothing was kept")
    if digest.hexdigest() != archive.checksum:
        raise PackageError(f"the archive of {what} does not have the index's checksum (SHA-1 {digest.hexdigest()}, "
                           f"expected {archive.checksum}): nothing was kept")
    if progress is not None:
        progress(done, total, done / max(time.monotonic() - started, 1e-6))
    return done


def archive_size(archive: ZooArchive) -> int | None:
    """The archive's size as its server states it when asked (HEAD), or None where it does not say or cannot be
    reached."""
    import requests

    try:
        with requests.head(archive.source, allow_redirects=True, timeout=CONNECT_SECONDS) as response:
            return _length(response) if response.status_code == 200 else None
    except requests.RequestException:
        return None


def _stop_if(cancel: threading.Event, archive: ZooArchive) -> None:
    if cancel.is_set():
        raise Cancelled(f"cancelled by the user while downloading {archive.name}")


def _length(response) -> int | None:
    """The archive's size as the server states it, where it sends it unencoded."""
    length = response.headers.get("Content-Length")
    encoded = response.headers.get("Content-Encoding", "identity") != "identity"
    return int(length) if length and length.isdigit() and not encoded else None


def _write_record(target: str, archive: ZooArchive, size: int) -> None:
    with open(target + ".json", "w", encoding="utf-8") as stream:
        json.dump({"source": archive.source, "checksum": archive.checksum, "bytes": size,
                   "downloaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, stream)
