"""MonaiDeployer's own folder: the trust list, made environments, unpacked bundles."""

from __future__ import annotations

import os


def home_folder() -> str:
    """``$MONAIDEPLOYER_HOME``, else ``MonaiDeployer`` in the user's cache folder."""
    configured = os.environ.get("MONAIDEPLOYER_HOME")
    if configured:
        return configured
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "MonaiDeployer")
