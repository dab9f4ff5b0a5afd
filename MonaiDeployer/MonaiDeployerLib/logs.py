"""The library's log (``logging.getLogger(__name__)`` in each module, under "MonaiDeployerLib"), shown where the
user reads: on stderr for the command line's ``--verbose``, in Slicer's panel log through ``LogLines``."""

from __future__ import annotations

import collections
import logging
import sys

LIBRARY_LOGGER = "MonaiDeployerLib"
LINES_KEPT = 1000
_attached = set()  # the handlers attach() added
_level_before = logging.NOTSET  # the library logger's level before the first of them


def log_to_stderr(level: int = logging.DEBUG) -> logging.Handler:
    """Print the library's log lines at ``level`` and above on stderr (the command line's ``--verbose``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    return attach(handler, level)


def attach(handler: logging.Handler, level: int) -> logging.Handler:
    """Show the library's records at ``level`` and above in ``handler`` (the library's logger lets them through
    until the last handler is detached)."""
    global _level_before
    logger = logging.getLogger(LIBRARY_LOGGER)
    if not _attached:
        _level_before = logger.level
    handler.setLevel(level)
    logger.addHandler(handler)
    _attached.add(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    return handler


def detach(handler: logging.Handler) -> None:
    """Stop showing the library's records in ``handler``; with the last one gone, the logger's level is as before."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    logger.removeHandler(handler)
    if handler in _attached:
        _attached.discard(handler)
        if not _attached:
            logger.setLevel(_level_before)


class LogLines(logging.Handler):
    """The library's log lines from any thread (the panel's card and warm-up run in one), kept until the GUI thread
    takes them with ``drain()``: Qt widgets may be touched from the GUI thread alone."""

    def __init__(self):
        super().__init__()
        self._lines = collections.deque(maxlen=LINES_KEPT)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self._lines.append(self.format(record))

    def drain(self) -> list:
        """The lines logged since the last call, oldest first."""
        lines = []
        while self._lines:
            lines.append(self._lines.popleft())
        return lines
