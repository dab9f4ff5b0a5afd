"""Errors that reach the user: each message is one line that names the cause."""


class MonaiDeployerError(Exception):
    """Base of every error this library raises on purpose; ``str(error)`` is shown to the user."""


class InputError(MonaiDeployerError):
    """The input volume or an input file cannot be used."""


class PackageError(MonaiDeployerError):
    """The model package is missing, unreadable or does not fit the input."""


class NotAMapError(PackageError):
    """A container image without MAP manifests: its own entry point can still run, if the user asks for it."""


class CannotKeepWarm(PackageError):
    """An app that cannot be imported and re-run in a kept process (not a MONAI Deploy app, or a MAP's image
    whose Python cannot run the worker): it can still run cold."""


class OutputError(MonaiDeployerError):
    """The result cannot be written where the user asked."""


class WorkerError(MonaiDeployerError):
    """The worker process failed, crashed or could not start."""


class Cancelled(MonaiDeployerError):
    """The user cancelled the run."""
