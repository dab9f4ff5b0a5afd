"""The *Model Zoo...* dialog's work off the GUI thread: the catalogue read, and one download at a time, which the
user can cancel. Nothing here touches Qt: the dialog's timer looks at the futures and the progress told."""

from __future__ import annotations

import concurrent.futures
import threading
from dataclasses import dataclass, field

from ..zoo.catalogue import Catalogue, ZooArchive, read_catalogue
from ..zoo.download import archive_size, download, download_record
from ..zoo.listing import ListedBundle, listed


@dataclass
class ZooListing:
    catalogue: Catalogue
    bundles: list[ListedBundle]
    sizes: dict = field(default_factory=dict)  # {(name, version): archive bytes} of the versions downloaded here


@dataclass
class ZooDownload:
    """A download in flight: ``future`` gives the bundle's folder; set ``cancel`` to stop it."""

    archive: ZooArchive
    future: concurrent.futures.Future | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: tuple | None = None  # (done bytes, total bytes or None, bytes per second), as last told

    def told(self, done: int, total: int | None, rate: float) -> None:
        self.progress = (done, total, rate)  # one tuple, replaced whole: the GUI thread reads it as it is


def read_listing(index: str) -> ZooListing:
    catalogue = read_catalogue(index)
    bundles = listed(catalogue)
    return ZooListing(catalogue, bundles, {(bundle.name, version): download_record(bundle.name, version).get("bytes")
                                           for bundle in bundles for version in bundle.cached})


def matching(bundles: list[ListedBundle], text: str) -> list[ListedBundle]:
    """The bundles whose name or description holds every word of ``text``, whatever their case."""
    words = text.lower().split()
    return [bundle for bundle in bundles
            if all(word in f"{bundle.name} {bundle.description}".lower() for word in words)]


class ZooBrowser:
    """One background thread for the dialog: the catalogue and the downloads wait their turn on it."""

    def __init__(self):
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="MonaiDeployer-zoo")

    def read(self, index: str) -> concurrent.futures.Future:
        """A future of the ``ZooListing`` of ``index`` (a URL or a file)."""
        return self._executor.submit(read_listing, index)

    def size(self, archive: ZooArchive) -> concurrent.futures.Future:
        """A future of the archive's size as its server states it (None: it does not say)."""
        return self._executor.submit(archive_size, archive)

    def download(self, archive: ZooArchive) -> ZooDownload:
        started = ZooDownload(archive)
        started.future = self._executor.submit(download, archive, started.told, started.cancel)
        return started

    def shutdown(self, running: ZooDownload | None = None) -> None:
        """Stop ``running`` (it leaves nothing behind) and do not wait for it."""
        if running is not None:
            running.cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
