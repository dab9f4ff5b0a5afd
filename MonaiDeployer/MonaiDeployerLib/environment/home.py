"""MonaiDeployer's own folder: the trust list, made environments, unpacked bundles."""

from __future__ import annotations

import json
import os
import tempfile


def home_folder() -> str:
    """``$MONAIDEPLOYER_HOME``, else ``MonaiDeployer`` in the user's cache folder."""
    configured = os.environ.get("MONAIDEPLOYER_HOME")
    if configured:
        return configured
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "MonaiDeployer")


def write_json(path: str, document, indent: int | None = None) -> None:
    """``document`` as ``path``, written atomically: a reader finds the old file or the new one, never half of it."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(document, stream, indent=indent)
        os.replace(partial, path)
    except BaseException:
        os.remove(partial)
        raise
