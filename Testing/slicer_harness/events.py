"""Driving the panel as a user would: the Qt event loop run for real, modal dialogs answered, GUI blocks measured."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6 import QtCore, QtWidgets


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Run the event loop (timers, queued signals, repaints) until ``condition()`` holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    loop = QtCore.QEventLoop()
    timer = QtCore.QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: loop.quit() if condition() or time.monotonic() > deadline else None)
    timer.start()
    try:
        if not condition():
            loop.exec()
    finally:
        timer.stop()
    if not condition():
        raise AssertionError(f"not within {timeout:g} s: {what}")


def perform(action: Callable[[], object], timeout: float = 600) -> None:
    """Do ``action`` from inside the event loop, as Qt delivers a user's click in Slicer: a dialog it opens runs its
    own loop one level down (Slicer's message boxes call deleteLater() before exec(), which only works so)."""
    outcome = []

    def run() -> None:
        try:
            action()
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    QtCore.QTimer.singleShot(0, run)
    wait_until(lambda: bool(outcome), timeout, "the action ended")
    if outcome[0] is not None:
        raise outcome[0]


def spin(seconds: float) -> None:
    """Run the event loop for ``seconds``."""
    end = time.monotonic() + seconds
    wait_until(lambda: time.monotonic() >= end, seconds + 5, "the event loop ran")


class Heartbeat:
    """A 10 ms timer on the GUI thread; the longest gap between its ticks is the longest time the GUI was blocked."""

    INTERVAL_MS = 10

    def __init__(self):
        self.longest = 0.0
        self._last = None
        self._timer = QtCore.QTimer()
        self._timer.setInterval(self.INTERVAL_MS)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._last is not None:
            self.longest = max(self.longest, now - self._last)
        self._last = now

    def __enter__(self):
        self._last = time.monotonic()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.stop()
        self._tick()


class DialogAnswerer:
    """Answers the modal dialogs the panel opens, as the user would, and records what each asked.

    ``answer(dialog) -> str`` gets the modal dialog and returns the text of the button to press on a message box, a
    path for a file dialog (empty: Cancel) or an item for an input dialog. Use as a context manager.
    """

    def __init__(self, answer: Callable[[QtWidgets.QWidget], str]):
        self.asked: list[str] = []
        self._answer = answer
        self._timer = QtCore.QTimer()
        self._timer.setInterval(20)
        self._timer.timeout.connect(self._look)

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.stop()

    def _look(self) -> None:
        dialog = QtWidgets.QApplication.activeModalWidget()
        if dialog is None or not dialog.isVisible():
            return
        if isinstance(dialog, QtWidgets.QMessageBox):
            self.asked.append(dialog.text)
            wanted = self._answer(dialog)
            buttons = [button for button in dialog.buttons() if button.text.replace("&", "") == wanted]
            if not buttons:
                raise AssertionError(f"no button {wanted!r} on the dialog {dialog.text!r}")
            buttons[0].click()
        elif isinstance(dialog, QtWidgets.QFileDialog):
            self.asked.append(dialog.windowTitle)
            path = self._answer(dialog)
            if path and dialog.fileMode == QtWidgets.QFileDialog.FileMode.Directory:
                dialog.setDirectory(path)  # a folder is chosen by being in it, as the dialog's "Choose" does
                dialog.accept()
            elif path:
                # Typed into the file name field, as a user does: selectFile() depends on the folder having loaded.
                dialog.findChild(QtWidgets.QLineEdit, "fileNameEdit").setText(path)
                dialog.accept()
            else:
                dialog.reject()
        elif isinstance(dialog, QtWidgets.QInputDialog):
            self.asked.append(dialog.labelText)
            dialog.setTextValue(self._answer(dialog))
            dialog.accept()
