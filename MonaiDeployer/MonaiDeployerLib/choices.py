"""The choices the command line and Slicer's panel offer, each taken from where the library defines it.

Light on purpose (no numpy): Slicer imports the module file, and with it this, at start-up.
"""

from .environment.containers import RUNTIMES
from .packages.kind import INPUT_FORMATS, LAUNCHES
from .packages.registry import MODES

DEVICES = ("auto", "cpu", "cuda")  # auto: CUDA when the worker's torch sees a GPU
OUTPUT_KINDS = ("labelmap", "segmentation")
MODE_CHOICES = ("auto", *MODES)  # auto: the package's files decide
APP_INPUT_FORMAT_CHOICES = ("auto", *INPUT_FORMATS)  # auto: what the app's app.yaml, manifest or code says
CONTAINER_RUNTIME_CHOICES = ("auto", *RUNTIMES)  # auto: the first that answers
RUN_ON = ("this computer", "a server")  # the panel's: a worker here, or a server that serve started
BATCH_OUTPUT_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nrrd", ".nii")  # the files imageio.volume writes (its SUFFIXES)

__all__ = ["APP_INPUT_FORMAT_CHOICES", "BATCH_OUTPUT_SUFFIXES", "CONTAINER_RUNTIME_CHOICES", "DEVICES",
           "INPUT_FORMATS", "LAUNCHES", "MODES", "MODE_CHOICES", "OUTPUT_KINDS", "RUNTIMES", "RUN_ON"]
