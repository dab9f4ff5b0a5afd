"""The catalogue as users see it (``zoo list``, the panel's *Model Zoo...*): each bundle's versions, and, once one
is downloaded, its description and size from the cache."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from .catalogue import Catalogue
from .download import bundle_folder, download_record, downloaded_versions


@dataclass
class ListedBundle:
    name: str
    versions: list  # newest first
    cached: list  # the versions downloaded here, newest first
    description: str = ""  # from the newest cached version's metadata ("": none downloaded yet)
    size_bytes: int | None = None  # that version's archive

    @property
    def newest(self) -> str:
        return self.versions[0]

    def to_dict(self) -> dict:
        return {**asdict(self), "newest": self.newest}


def listed(catalogue: Catalogue) -> list[ListedBundle]:
    bundles = []
    for name, archives in catalogue.bundles.items():
        cached = downloaded_versions(name)
        known = cached[0] if cached else None
        bundles.append(ListedBundle(name, [archive.version for archive in archives], cached,
                                    _description(name, known) if known else "",
                                    download_record(name, known).get("bytes") if known else None))
    return bundles


def _description(name: str, version: str) -> str:
    try:
        with open(os.path.join(bundle_folder(name, version), "configs", "metadata.json"), encoding="utf-8") as stream:
            metadata = json.load(stream)
    except (OSError, ValueError):
        return ""
    description = metadata.get("description", "") if isinstance(metadata, dict) else ""
    return " ".join(description.split()) if isinstance(description, str) else ""


def source_line(catalogue: Catalogue) -> str:
    """Where the listing comes from: the index read now, or its last copy and why."""
    if catalogue.offline_reason:
        return (f"the Model Zoo index at {catalogue.url} cannot be read ({catalogue.offline_reason}): this is its "
                f"last copy, from {catalogue.fetched}")
    return f"the Model Zoo index at {catalogue.url}, read {catalogue.fetched}"


def size_text(count: float) -> str:
    """A number of bytes as people read it: 512 B, 137.4 KiB, 1.2 GiB."""
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.1f} {unit}" if unit != "B" else f"{count:.0f} B"
        count /= 1024
    return f"{count:.1f} GiB"
