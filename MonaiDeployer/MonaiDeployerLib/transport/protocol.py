"""The worker protocol: one JSON object per line, requests on the worker's stdin, events on its stdout.

Requests carry an ``id`` and an ``op`` ("warmup", "run", "shutdown"). The worker answers
each with zero or more ``progress`` and ``log`` events, then one ``done`` or ``error`` event with
the same id. Volumes travel as ``.npy`` files in a private temporary folder, never in the stream.
One message gets no answer: ``{"op": "owner", "folder": ...}`` names the owner's private folder,
which the worker removes if the owner dies (its stdin ends without a shutdown request).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass
class Event:
    """What a run reports: ``kind`` is "progress", "log", "done" or "error"."""

    kind: str
    stage: str = ""
    fraction: float | None = None
    message: str = ""


def encode(message: dict) -> str:
    return json.dumps(message, separators=(",", ":")) + "\n"


def decode(line: str) -> dict:
    return json.loads(line)
