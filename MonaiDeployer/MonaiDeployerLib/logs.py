"""The library's log (``logging.getLogger(__name__)`` in each module, under "MonaiDeployerLib"), shown where the
user reads: on stderr for the command line's ``--verbose``, in Slicer's panel log through ``LogLines``."""

from __future__ import annotations

import collections
import logging
import sys

LIBRARY_LOGGER = "MonaiDeployerLib"
LINES_KEPT = 1000
_attached = {}  # handler -> its level; None -> the library logger's level before the first was attached


def log_to_stderr(level: int = logging.DEBUG) -> logging.Handler:
    """Print the library's log lines at ``level`` and above on stderr (the command line's ``--verbose``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    return attach(handler, level)


def attach(handler: logging.Handler, level: int) -> logging.Handler:
    """Show the library's records at ``level`` and above in ``handler`` (the library's logger lets them through
    until ``detach``)."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    handler.setLevel(level)
    if not _attached:
        _attached[None] = logger.level
    _attached[handler] = level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    return handler


def detach(handler: logging.Handler) -> None:
    """Stop showing the library's records in ``handler``; the logger's level is as before when none is left."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    logger.removeHandler(handler)
    _attached.pop(handler, None)
    if list(_attached) == [None]:
        logger.setLevel(_attached.pop(None))


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
