"""A Model Zoo on loopback, for the tests: a real HTTP server serving an index in the Model Zoo's format
(``model_info.json``: NAME_vVERSION with source and SHA-1) and archives made here, laid out as the Zoo's are
(``NAME/configs/...``), with faults to order."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import socket
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from make_zoo_bundle import zoo_configs

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_BUNDLE = REPO_ROOT / "MonaiDeployer" / "Resources" / "SampleModels" / "PhantomBundle"
PHANTOM = "phantom_organ_lesion"  # the sample bundle as a Model Zoo bundle, in versions 0.9.0 and 1.0.0
DATA_LICENCE = "Creative Commons Attribution-NonCommercial 4.0 International (CC BY-NC 4.0)"


def zoo_archive(name: str, bundle: Path | None = None, configs: Path | None = None, padding: int = 0,
                escaping: bool = False) -> bytes:
    """A zip as the Model Zoo publishes one: everything under ``NAME/``, with the licences in its usual places."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder, prefix in ((bundle, ""), (configs, "configs/")):
            for path in sorted(folder.rglob("*")) if folder else []:
                if path.is_file():
                    archive.write(path, f"{name}/{prefix}{path.relative_to(folder).as_posix()}")
        archive.writestr(f"{name}/LICENSE", "Apache License\nVersion 2.0, January 2004\n")
        archive.writestr(f"{name}/docs/data_license.txt", f"{DATA_LICENCE}\nThe weights were trained on it.\n")
        if padding:  # stored, not deflated: the archive is as large as asked
            archive.writestr(zipfile.ZipInfo(f"{name}/models/padding.bin"), os.urandom(padding))
        if escaping:
            archive.writestr(f"{name}/../../outside.txt", "written outside the bundle's folder")
    return buffer.getvalue()


class ZooServer(ThreadingHTTPServer):
    """The Model Zoo's index and archives on loopback; ``faults`` makes an archive's route misbehave."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ZooHandler)
        self.archives, self.checksums, self.faults = {}, {}, {}
        self.requests = collections.Counter()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.index_url = f"{self.url}/models/model_info.json"

    def handle_error(self, request, client_address) -> None:
        """A client gone mid-transfer (a download cancelled or killed) is what the tests make happen: not an error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def publish(self, name: str, version: str, data: bytes, checksum: str | None = None, fault: str | None = None):
        key = f"{name}_v{version}"
        self.archives[key], self.checksums[key] = data, checksum or hashlib.sha1(data).hexdigest()
        self.faults.pop(key, None)
        if fault:
            self.faults[key] = fault

    def index(self) -> dict:
        return {key: {"checksum": self.checksums[key], "source": f"{self.url}/files/{key}.zip"}
                for key in self.archives}


class ZooHandler(BaseHTTPRequestHandler):
    SLOW_CHUNK, SLOW_SECONDS = 64 * 1024, 0.2

    def do_GET(self):
        zoo = self.server
        zoo.requests[self.path] += 1
        if self.path == "/models/model_info.json":
            return self._send(json.dumps(zoo.index()).encode())
        key = self.path.removeprefix("/files/").removesuffix(".zip")
        fault = zoo.faults.get(key)
        if key not in zoo.archives or fault == "missing":
            self.send_error(404)
            return None
        data = zoo.archives[key]
        if fault == "vanishing":  # says the whole size, sends half, and is gone
            self._headers(len(data))
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return None
        if fault == "slow":
            self._headers(len(data))
            for start in range(0, len(data), self.SLOW_CHUNK):
                self.wfile.write(data[start:start + self.SLOW_CHUNK])
                self.wfile.flush()
                time.sleep(self.SLOW_SECONDS)
            return None
        return self._send(data)

    def do_HEAD(self):
        """The archive's size, as a server states it (counted apart from the downloads)."""
        self.server.requests[f"HEAD {self.path}"] += 1
        data = self.server.archives.get(self.path.removeprefix("/files/").removesuffix(".zip"))
        if data is None:
            self.send_error(404)
            return
        self._headers(len(data))

    def _headers(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, data: bytes) -> None:
        self._headers(len(data))
        self.wfile.write(data)

    def log_message(self, *_arguments) -> None:
        pass



@contextlib.contextmanager
def serving_zoo():
    """The server, serving the sample bundle as PHANTOM 0.9.0 and 1.0.0 (it reaches the Dice target), and
    spleen_ct_segmentation 0.5.9 with the Model Zoo's own configs (no weights: listed, downloaded, never run)."""
    server = ZooServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    good = zoo_archive(PHANTOM, bundle=SAMPLE_BUNDLE)
    server.publish(PHANTOM, "0.9.0", good)
    server.publish(PHANTOM, "1.0.0", good)
    server.publish("spleen_ct_segmentation", "0.5.9", zoo_archive("spleen_ct_segmentation",
                                                                  configs=zoo_configs("spleen_ct_segmentation")))
    server.good = good
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
