"""The v2 inference protocol (KServe's, as Triton serves it) as this project's models speak it, binary tensors.

Request: the volume in its own dtype as ``volume_<type>`` [I, J, K, C] (exactly one of them; C = 1 for one image)
and ``ijk_to_ras`` FP64 [4, 4]; or ``describe`` alone, which asks for the package's card. Response: ``labelmap``
[I, J, K, M] on the volume's grid, UINT8 (UINT16 or INT32 for a model whose label values pass 255; M = 1: a label
value per voxel; M > 1: one 0/1 mask per label, mask m for label m + 1) and ``result``, one BYTES element of JSON:
the labels with names and colours, notes and timings, or the error that stopped the run, as one line. The
``CATALOGUE`` model answers ``describe`` with every served model's card. A request's parameters may name its run
(``run_id``) and the seconds it may take (``run_timeout_s``): the ``RUNS`` model then answers ``action`` "state" or
"cancel" of that run. Any v2 client can send these; this module needs numpy alone.
"""

from __future__ import annotations

import json
import re
import struct

import numpy as np

from ..errors import Cancelled, InputError, MonaiDeployerError, PackageError, WorkerError

DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
             "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
             "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}
VOLUME_TYPES = ("FP32", "INT16", "UINT16", "UINT8", "INT32")  # what medical volumes are stored as
IJK_TO_RAS, DESCRIBE, LABELMAP, RESULT = "ijk_to_ras", "describe", "labelmap", "result"
CATALOGUE = "monaideployer-models"  # the served models' cards: Triton keeps its own model index to admins
RUNS, RUN_ID, ACTION, RUN_TIMEOUT = "monaideployer-runs", "run_id", "action", "run_timeout_s"
PROGRESS = "monaideployer-progress"  # decoupled: a run's states streamed over gRPC
ERRORS = {error.__name__: error for error in (InputError, PackageError, WorkerError, Cancelled)}


def volume_input(datatype: str) -> str:
    return f"volume_{datatype.lower()}"


def datatype_of(array: np.ndarray) -> str:
    return next(name for name, dtype in DATATYPES.items() if np.dtype(dtype) == array.dtype)


def as_sent(array: np.ndarray) -> np.ndarray:
    """The volume in a type the served models take, converted only when its own is not one (float64 and float16
    become float32, int8 int16, bool uint8, wider integers int32 when their values fit, else float32)."""
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype in (np.dtype(DATATYPES[name]) for name in VOLUME_TYPES):
        return array
    if array.dtype == np.int8:
        return array.astype(np.int16)
    if array.dtype.kind in "iu" and array.size and np.iinfo(np.int32).min <= array.min() and \
            array.max() <= np.iinfo(np.int32).max:
        return array.astype(np.int32)
    return array.astype(np.float32)


def labelmap_datatype(labels: dict, overlapping: bool) -> str:
    """The ``labelmap`` output's type for a model's labels: UINT8 for masks and values to 255, UINT16 to 65535 (a
    parcellation's, e.g. FreeSurfer's), INT32 beyond."""
    largest = 1 if overlapping else max(labels, default=0)
    return "UINT8" if largest <= 255 else "UINT16" if largest <= 65535 else "INT32"


def channels_last(array: np.ndarray) -> np.ndarray:
    """[I, J, K] as [I, J, K, 1]; [I, J, K, C] as it is."""
    return array[..., np.newaxis] if array.ndim == 3 else array


def encode(tensors: dict, outputs: tuple = (), parameters: dict | None = None) -> tuple[list, int]:
    """A binary request body as its parts (the JSON header, then each tensor's bytes, a view of the array where it
    is little-endian and contiguous already: a volume is not copied to be sent) and the header's length, which goes
    in the ``Inference-Header-Content-Length`` HTTP header."""
    header, chunks = {"inputs": [], **({"parameters": parameters} if parameters else {})}, []
    for name, array in tensors.items():
        data = _tensor_bytes(array)
        header["inputs"].append({"name": name, "shape": list(array.shape), "datatype": datatype_of(array),
                                 "parameters": {"binary_data_size": len(data)}})
        chunks.append(data)
    header["outputs"] = [{"name": name, "parameters": {"binary_data": True}} for name in outputs]
    text = json.dumps(header).encode()
    return [text, *chunks], len(text)


def decode(body: bytes, header_length: int | None) -> dict:
    """The output tensors of a response body, binary or JSON."""
    header = json.loads(body[:header_length] if header_length is not None else body)
    tensors, offset = {}, header_length or 0
    for output in header.get("outputs", []):
        dtype, shape = DATATYPES[output["datatype"]], tuple(output["shape"])
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            tensors[output["name"]] = np.array(output["data"], dtype=dtype).reshape(shape)
            continue
        data = body[offset:offset + size]
        offset += size
        tensors[output["name"]] = _bytes_elements(data, shape) if dtype is np.object_ else \
            np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
    return tensors


def _tensor_bytes(array: np.ndarray) -> bytes | memoryview:
    if array.dtype == np.object_:
        return b"".join(struct.pack("<I", len(item)) + item for item in (_as_bytes(value) for value in array.flat))
    return memoryview(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))).cast("B")


def _bytes_elements(data: bytes, shape: tuple) -> np.ndarray:
    items, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        items.append(data[offset + 4:offset + 4 + length])
        offset += 4 + length
    return np.array(items, dtype=np.object_).reshape(shape)


def _as_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def json_tensor(document: dict) -> np.ndarray:
    """One BYTES element holding ``document`` as JSON."""
    return np.array([json.dumps(document).encode()], dtype=np.object_)


def json_of(tensor: np.ndarray) -> dict:
    return json.loads(tensor.reshape(-1)[0])


def text_of(tensor: np.ndarray) -> str:
    """A BYTES tensor's first element as text."""
    return _as_bytes(tensor.reshape(-1)[0]).decode(errors="replace")


def error_document(error: Exception) -> dict:
    """The one line a client shows: ours by their words, anything else by its type, never a traceback, and with the
    server's paths cut to their last part (a client need not know where the server keeps its files)."""
    if isinstance(error, MonaiDeployerError):
        kind = type(error).__name__ if type(error).__name__ in ERRORS else "WorkerError"
        message = str(error)
    else:
        kind, message = "WorkerError", f"{type(error).__name__}: {error}"
    return {"error": {"type": kind, "message": _SERVER_PATH.sub(lambda found: found.group(1), one_line(message))}}


def one_line(message: str) -> str:
    """A message up to any Python traceback it carries (Triton's and PyTriton's do), its whitespace collapsed."""
    return " ".join(message.split("Traceback (most recent call last)")[0].split())


_SERVER_PATH = re.compile(r"(?<![\w.])/(?:[^\s/'\":,;()]+/)+([^\s/'\":,;()]+)")


def raise_error(document: dict) -> None:
    """The error a served run answered with, raised as the same kind of error here."""
    if "error" in document:
        error = document["error"]
        raise ERRORS.get(error.get("type"), WorkerError)(error.get("message", "the server's run failed"))
