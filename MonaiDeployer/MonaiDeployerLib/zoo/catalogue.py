"""The Model Zoo's index of published bundle archives (``model_info.json``: one entry per ``NAME_vVERSION`` with
its archive's ``source`` URL and SHA-1 ``checksum``), grouped by name, newest version first. Read from its URL
(or a mirror's, or a hospital's own index of the same format) and kept, so that offline its last copy answers."""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field

from ..environment.home import home_folder, write_json
from ..errors import PackageError

DEFAULT_INDEX = "https://raw.githubusercontent.com/Project-MONAI/model-zoo/dev/models/model_info.json"
INDEX_VARIABLE = "MONAIDEPLOYER_ZOO_INDEX"
INDEX_SECONDS = 20
_ENTRY = re.compile(r"^(?P<name>.+)_v(?P<version>\d[0-9A-Za-z.+-]*)$")
SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")  # names and versions become folders of the cache
_CHECKSUM = re.compile(r"^[0-9a-fA-F]{40}$")


@dataclass(frozen=True)
class ZooArchive:
    """One published version of a bundle: where its zip is and the SHA-1 it must have."""

    name: str
    version: str
    source: str
    checksum: str


@dataclass
class Catalogue:
    url: str
    bundles: dict[str, list[ZooArchive]] = field(default_factory=dict)  # by name, newest version first
    fetched: str = ""  # when the index was read from ``url`` (ISO 8601, UTC)
    offline_reason: str = ""  # why this is the last copy kept, not the index read now ("": read now)

    def archive(self, name: str, version: str | None = None) -> ZooArchive:
        """The newest version of ``name``, or ``version``; one line naming what there is when it is not listed."""
        versions = self.bundles.get(name)
        if not versions:
            close = difflib.get_close_matches(name, self.bundles, n=3)
            raise PackageError(f"the Model Zoo index at {self.url} has no bundle {name}"
                               + (f" (did you mean {', '.join(close)}?)" if close else " (see: zoo list)"))
        if version is None:
            return versions[0]
        found = next((archive for archive in versions if archive.version == version), None)
        if found is None:
            raise PackageError(f"the Model Zoo index at {self.url} has no version {version} of {name}; it has "
                               f"{', '.join(archive.version for archive in versions)}")
        return found


def index_url(explicit: str | None = None) -> str:
    """``explicit`` (``--index``), else ``$MONAIDEPLOYER_ZOO_INDEX``, else the Model Zoo's. (The panel's setting
    comes after the environment variable: its dialog passes the one that applies.)"""
    return explicit or os.environ.get(INDEX_VARIABLE) or DEFAULT_INDEX


def read_catalogue(url: str | None = None) -> Catalogue:
    """The index at ``url`` (see ``index_url``), kept for later; where it cannot be read, the last copy kept, with
    the reason in ``offline_reason``."""
    url = index_url(url)
    try:
        document = _read_index(url)
    except _Unreadable as error:
        kept = _kept_copy(url)
        if kept is None:
            raise PackageError(f"cannot read the Model Zoo index at {url}: {error}; no earlier copy of it is kept "
                               "here") from None
        return catalogue_of(url, kept["index"], kept["fetched"], offline_reason=str(error))
    fetched = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    catalogue = catalogue_of(url, document, fetched)
    _keep(url, document, fetched)
    return catalogue


def catalogue_of(url: str, document, fetched: str, offline_reason: str = "") -> Catalogue:
    """The index's entries grouped by name; an entry whose name, version, source or checksum is unusable is left
    out (an index is data from elsewhere, and names become folders here)."""
    if not isinstance(document, dict):
        raise PackageError(f"{url} is not a Model Zoo index (expected a JSON object of NAME_vVERSION entries)")
    bundles: dict[str, list[ZooArchive]] = {}
    for key, entry in document.items():
        match = _ENTRY.match(key) if isinstance(key, str) else None
        if match is None or not isinstance(entry, dict) or not SAFE_PART.match(match["name"]) or \
                not SAFE_PART.match(match["version"]) or not isinstance(entry.get("source"), str) or \
                not _CHECKSUM.match(str(entry.get("checksum", ""))):
            continue
        bundles.setdefault(match["name"], []).append(
            ZooArchive(match["name"], match["version"], entry["source"], entry["checksum"].lower()))
    if document and not bundles:
        raise PackageError(f"{url} is not a Model Zoo index: none of its {len(document)} entries is NAME_vVERSION "
                           "with a source and a SHA-1 checksum")
    for versions in bundles.values():
        versions.sort(key=lambda archive: version_key(archive.version), reverse=True)
    return Catalogue(url, dict(sorted(bundles.items())), fetched, offline_reason)


def version_key(version: str) -> tuple:
    """Newest last: release numbers compared as numbers (0.10.0 after 0.9.1)."""
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


class _Unreadable(Exception):
    """The index could not be read now: the reason, in a few words."""


def _read_index(url: str):
    if os.path.isfile(url):  # an index on a share or a disk
        try:
            with open(url, encoding="utf-8") as stream:
                return json.load(stream)
        except (OSError, ValueError) as error:
            raise _Unreadable(f"cannot read it ({error})") from None
    if not url.startswith(("http://", "https://")):
        raise _Unreadable("no such file, and not an http:// or https:// address")
    import requests

    try:
        response = requests.get(url, timeout=INDEX_SECONDS)
        response.raise_for_status()
        return response.json()
    except requests.HTTPError as error:
        raise _Unreadable(f"HTTP {error.response.status_code}") from None
    except requests.RequestException as error:
        raise _Unreadable(why_unreachable(error)) from None
    except ValueError:
        raise _Unreadable("its answer is not JSON") from None


def why_unreachable(error) -> str:
    """A connection's failure in a few words, not urllib3's nested reprs."""
    import requests

    if isinstance(error, requests.Timeout):
        return "no answer in time"
    if isinstance(error, requests.ConnectionError):
        return "cannot connect (offline, or the server is down)"
    return type(error).__name__


def zoo_folder() -> str:
    return os.path.join(home_folder(), "zoo")


def _kept_path(url: str) -> str:
    return os.path.join(zoo_folder(), "indexes", hashlib.sha256(url.encode()).hexdigest()[:16] + ".json")


def _keep(url: str, document: dict, fetched: str) -> None:
    write_json(_kept_path(url), {"url": url, "fetched": fetched, "index": document})


def _kept_copy(url: str) -> dict | None:
    try:
        with open(_kept_path(url), encoding="utf-8") as stream:
            kept = json.load(stream)
    except (OSError, ValueError):
        return None
    return kept if isinstance(kept, dict) and kept.get("url") == url and "index" in kept else None
