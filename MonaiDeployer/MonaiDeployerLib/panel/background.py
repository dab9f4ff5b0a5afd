"""The panel's work off the GUI thread: the info card and the worker's warm-up, on one thread, polled from the GUI.

Nothing here touches Qt: the panel's timer calls ``finished_card()`` and ``poll_warmup()``, and shows what they give.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable

from .infocard import Card, describe, describe_served
from .preflight import Choice

logger = logging.getLogger(__name__)


class PanelBackground:
    """Makes one info card at a time and starts one warm-up at a time, on one background thread."""

    def __init__(self):
        self._executor = None
        self._card = None  # (choice, future of its Card)
        self._warmup_start = None  # future of Runner.begin_warmup(), while the worker starts
        self._warmup_call = None  # the worker's call importing torch and MONAI, until it ends or is dropped

    def _submit(self, function, *args) -> concurrent.futures.Future:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="MonaiDeployer")
        return self._executor.submit(function, *args)

    def describe(self, choice: Choice, runner, is_trusted: Callable) -> None:
        """Start making the card of ``choice`` (replacing one being made: its result is dropped). ``runner``: the
        worker's, or on a server the ``RemoteRunner``, whose server is asked."""
        self._card = (choice, self._submit(describe_served, choice, runner.server) if choice.server_url else
                      self._submit(describe, choice, runner, is_trusted))

    def describing(self, choice: Choice | None = None) -> bool:
        """A card is being made (of ``choice``, when given)."""
        return self._card is not None and (choice is None or self._card[0] == choice)

    def finished_card(self) -> tuple[Choice, Card] | None:
        """The card made, once, when it is ready."""
        if self._card is None or not self._card[1].done():
            return None
        choice, future = self._card
        self._card = None
        try:
            return choice, future.result()
        except Exception as error:  # describe() puts problems in the card: this is a bug in it, shown as such
            logger.exception("Making the info card failed")
            return choice, Card(choice, error=f"{type(error).__name__}: {error}")

    def start_warmup(self, runner) -> None:
        """Start the worker and import torch and MONAI in it, unless a warm-up is under way or it was asked."""
        if not self.warming_up and not runner.warmed:
            self._warmup_start = self._submit(runner.begin_warmup)

    @property
    def warming_up(self) -> bool:
        return self._warmup_start is not None or self._warmup_call is not None

    def poll_warmup(self) -> None:
        """Move the warm-up on; it logs how it ended."""
        if self._warmup_start is not None:
            if not self._warmup_start.done():
                return
            try:
                self._warmup_call = self._warmup_start.result()  # None: nothing to import
            except Exception as error:  # a worker that cannot start: the card and Apply say why
                logger.info("Warming the worker up failed: %s", error)
            self._warmup_start = None
        if self._warmup_call is not None:
            self._warmup_call.poll()
            if self._warmup_call.done:
                if self._warmup_call.error is None:
                    seconds = self._warmup_call.result.get("timings", {}).get("import", 0.0)
                    logger.info("Worker warmed up: torch and MONAI imported in %.1f s", seconds)
                else:
                    logger.info("Warming the worker up failed: %s", self._warmup_call.error)
                self._warmup_call = None

    def drop_warmup(self) -> None:
        """Stop following the warm-up: a run is about to poll the worker's messages, and calls share them."""
        self._warmup_start = self._warmup_call = None

    @property
    def busy(self) -> bool:
        return self._card is not None or self.warming_up

    def shutdown(self) -> None:
        """Drop queued work and do not wait for the step running (close its runner first, so that it ends)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._card = None
        self.drop_warmup()
