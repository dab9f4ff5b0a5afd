"""The *Model Zoo...* dialog's work off the GUI thread: the catalogue read, and one download at a time, which the
user can cancel. Nothing here touches Qt: the dialog's timer looks at the futures and the progress told."""

from __future__ import annotations

import concurrent.futures
import threading
from dataclasses import dataclass, field

from ..zoo.catalogue import Catalogue, ZooArchive, read_catalogue
from ..zoo.download import download
from ..zoo.listing import ListedBundle, listed


@dataclass
class ZooListing:
    catalogue: Catalogue
    bundles: list[ListedBundle]


@dataclass
class ZooDownload:
    """A download in flight: ``future`` gives the bundle's folder; set ``cancel`` to stop it."""

    archive: ZooArchive
    future: concurrent.futures.Future | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: tuple | None = None  # (done bytes, total bytes or None, bytes per second), as last told

    def told(self, done: int, total: int | None, rate: float) -> None:
        self.progress = (done, total, rate)  # one tuple, replaced whole: the GUI thread reads it as it is


def read_listing(index: str | None) -> ZooListing:
    catalogue = read_catalogue(index or None)
    return ZooListing(catalogue, listed(catalogue))


def matching(bundles: list[ListedBundle], text: str) -> list[ListedBundle]:
    """The bundles whose name or description holds every word of ``text``, whatever their case."""
    words = text.lower().split()
    return [bundle for bundle in bundles
            if all(word in f"{bundle.name} {bundle.description}".lower() for word in words)]


class ZooBrowser:
    """One background thread for the dialog: the catalogue and the downloads wait their turn on it."""

    def __init__(self):
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="MonaiDeployer-zoo")

    def read(self, index: str | None) -> concurrent.futures.Future:
        """A future of the ``ZooListing`` of ``index`` (None: the environment's, else the Model Zoo's)."""
        return self._executor.submit(read_listing, index)

    def download(self, archive: ZooArchive) -> ZooDownload:
        started = ZooDownload(archive)
        started.future = self._executor.submit(download, archive, started.told, started.cancel)
        return started

    def shutdown(self, running: ZooDownload | None = None) -> None:
        """Stop ``running`` (it leaves nothing behind) and do not wait for it."""
        if running is not None:
            running.cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
