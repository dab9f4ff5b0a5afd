"""``zoo:NAME[@VERSION]``, the package argument that names a Model Zoo bundle: its cached folder, downloaded on
first use. A named version already in the cache needs no network; offline, the index's last copy says which
version is the newest."""

from __future__ import annotations

import logging
import os

from ..errors import MonaiDeployerError, PackageError
from .catalogue import SAFE_PART, read_catalogue
from .download import bundle_folder, download, downloaded_versions

PREFIX = "zoo:"
logger = logging.getLogger(__name__)


def is_zoo_reference(location) -> bool:
    return isinstance(location, str) and location.startswith(PREFIX)


def parse_reference(reference: str) -> tuple[str, str | None]:
    """(name, version or None) of ``zoo:NAME[@VERSION]``."""
    name, _, version = reference[len(PREFIX):].partition("@")
    if not SAFE_PART.match(name) or (version and not SAFE_PART.match(version)):
        raise PackageError(f"not a Model Zoo reference: {reference} (expected zoo:NAME or zoo:NAME@VERSION)")
    return name, version or None


def resolve(reference: str, index: str | None = None, progress=None, cancel=None) -> str:
    """The cached bundle folder that ``reference`` names, downloaded first when it is not there (``progress`` and
    ``cancel`` as for ``download``)."""
    name, version = parse_reference(reference)
    if version and os.path.isdir(bundle_folder(name, version)):
        return bundle_folder(name, version)
    try:
        catalogue = read_catalogue(index)
    except MonaiDeployerError:
        cached = downloaded_versions(name) if version is None else []
        if not cached:
            raise
        logger.warning("The Model Zoo index cannot be read: running the newest cached %s, %s", name, cached[0])
        return bundle_folder(name, cached[0])
    if catalogue.offline_reason:
        logger.warning("The Model Zoo index at %s cannot be read (%s): using its copy of %s", catalogue.url,
                       catalogue.offline_reason, catalogue.fetched)
    return download(catalogue.archive(name, version), progress, cancel)
