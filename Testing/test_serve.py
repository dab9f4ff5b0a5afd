"""``serve`` and ``run --server``: a real NVIDIA Triton server (the tritonserver binary PyTriton's wheel carries) on
loopback, its model run by a warm worker, and this project's v2 client, through the command line and the API."""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import psutil
import pytest
from conftest import REPO_ROOT, as_in_a_terminal, truth_on
from serve_process import SERVER_PYTHON, Served, free_ports, served_until_done

from MonaiDeployerLib import (
    Cancelled,
    InputError,
    MonaiDeployerError,
    PackageError,
    Runner,
    Volume,
    WorkerError,
    open_package,
    read_volume,
    write_volume,
)
from MonaiDeployerLib.serving import v2
from MonaiDeployerLib.serving.remote import RemoteServer
from MonaiDeployerLib.serving.remote_runner import RemoteRunner
from MonaiDeployerLib.serving.served import served_hash
from MonaiDeployerLib.serving.triton_server import exposure_warning
from MonaiDeployerLib.testing import sampledata
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label

SAMPLE_BUNDLE = REPO_ROOT / "MonaiDeployer" / "Resources" / "SampleModels" / "PhantomBundle"
DEPLOY_APP = REPO_ROOT / "Testing" / "deploy_apps" / "phantom_nifti"  # the sample network as SDK operators
LABELS = {1: "organ", 2: "lesion"}


def is_loopback(ip: str) -> bool:
    """127.0.0.1, ::1, or 127.0.0.1 as an IPv6 socket shows it (gRPC's: ::ffff:127.0.0.1)."""
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def cli_in(python, *arguments) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "MonaiDeployerLib", *map(str, arguments)], capture_output=True,
                          text=True, cwd=REPO_ROOT / "MonaiDeployer", timeout=300)


PARCEL = 300  # a label value a UINT8 labelmap cannot hold, as a parcellation's (FreeSurfer's go to 2035)


@pytest.fixture(scope="module")
def parcellation_model(tmp_path_factory) -> str:
    """A TorchScript model whose one label is PARCEL: 301 scores, the last winning where the intensity passes 0.5."""
    import torch

    class Parcellation(torch.nn.Module):
        def __init__(self, losing: int):
            super().__init__()
            self.losing = losing  # the scores between background and PARCEL, which never win

        def forward(self, x):
            others = torch.full_like(x, -1.0).expand(-1, self.losing, -1, -1, -1)
            return torch.cat([0.5 - x, others, x - 0.5], dim=1)

    path = tmp_path_factory.mktemp("parcellation") / "parcellation.ts"
    torch.jit.script(Parcellation(PARCEL - 1).eval()).save(str(path))
    path.with_suffix(".json").write_text(json.dumps({"name": "Parcellation", "labels": {str(PARCEL): "parcel"}}))
    return str(path)


@pytest.fixture(scope="module")
def server(sample_model, parcellation_model, tmp_path_factory):
    """``serve`` of the sample TorchScript model, bundle and Deploy app (which gets the model with --model), and a
    model with a label above 255, their workers in this Python (torch, MONAI, the Deploy SDK), until the module's
    tests are done; then SIGTERM, which must leave no process of it (Triton, its backend stubs, the workers)."""
    yield from served_until_done([sample_model, SAMPLE_BUNDLE, DEPLOY_APP, parcellation_model, "--model", sample_model,
                                  "--trust", "--device", "cpu"], models=4,
                                 errors=tmp_path_factory.mktemp("serve") / "stderr.txt")


def test_served_models_are_named_by_their_package_and_content(server, sample_model, parcellation_model):
    packages = [open_package(sample_model), open_package(SAMPLE_BUNDLE),
                open_package(DEPLOY_APP, model=sample_model), open_package(parcellation_model)]
    names = [f"{prefix}-{served_hash(package)[:12]}" for prefix, package in zip(
        ("Phantom-organ-and-lesion", "Phantom-organ-and-lesion", "Phantom-organ-and-lesion", "Parcellation"),
        packages, strict=True)]
    assert len(set(names)) == 4
    assert [line.split()[0] for line in server.listing[1:]] == names
    assert server.listing[1].split()[1:] == ["Phantom", "organ", "and", "lesion", "(tiny", "UNet)", "1.0.0",
                                             "(torchscript,", "1", "instance)"]
    listed = cli_in(sys.executable, "models", "--server", server.url, "--json")
    assert listed.returncode == 0, listed.stderr
    models = json.loads(listed.stdout)
    assert [model["model"] for model in models] == names
    assert [model["mode"] for model in models] == ["torchscript", "bundle", "deploy", "torchscript"]
    assert all(model["labels"] == {"1": "organ", "2": "lesion"} for model in models[:3])


def test_label_values_above_255_come_back_whole(server):
    remote = RemoteServer(server.url)
    model = next(entry["model"] for entry in remote.models() if entry["name"] == "Parcellation")
    intensity = np.random.default_rng(2).random((24, 20, 16), dtype=np.float32)
    result = remote.run(model, Volume(intensity, np.diag([0.8, 0.9, 1.5, 1.0])))
    assert result.labels == {PARCEL: "parcel"} and result.labelmap.array.dtype == np.uint16
    assert np.array_equal(result.labelmap.array, np.where(intensity > 0.5, PARCEL, 0))


def test_held_out_phantoms_through_run_server_reach_the_dice_target(server, sample_model, held_out, tmp_path):
    """TorchScript through the command line by the model's name, then by the package's path; the bundle and the
    Deploy app through the API, each found by its package (matched by content hash)."""
    remote = RemoteServer(server.url)
    script = remote.find(sample_model)
    served = [remote.find(open_package(SAMPLE_BUNDLE)), remote.find(open_package(DEPLOY_APP, model=sample_model))]
    for case, volume, truth in held_out:
        source = write_volume(tmp_path / f"{case['name']}.nii.gz", volume)
        output = tmp_path / f"{case['name']}.seg.nrrd"
        by_name = cli_in(sys.executable, "run", script, source, output, "--server", server.url)
        assert by_name.returncode == 0, by_name.stderr
        results = [read_volume(output)] + [remote.run(model, volume).labelmap for model in served]
        for model, result in zip([script, *served], results, strict=True):
            assert result.same_grid(volume, tolerance=1e-6), (model, case["name"])
            scores = dice_per_label(result.array, truth, LABELS)
            assert min(scores.values()) >= MINIMUM_DICE, (model, case["name"], scores)
    by_path = cli_in(sys.executable, "run", sample_model, source, tmp_path / "by-path.nii.gz", "--server", server.url)
    assert by_path.returncode == 0, by_path.stderr
    assert np.array_equal(read_volume(tmp_path / "by-path.nii.gz").array, read_volume(output).array)


def torchscript_model(remote: RemoteServer) -> str:
    return next(entry["model"] for entry in remote.models() if entry["mode"] == "torchscript")


def test_a_volume_goes_in_its_own_type_and_comes_back_on_its_grid(server, held_out):
    remote = RemoteServer(server.url)
    model = torchscript_model(remote)
    case, volume, truth = held_out[1]
    hounsfield = Volume(np.round(volume.array).astype(np.int16), volume.ijk_to_ras)
    assert v2.volume_input(v2.datatype_of(v2.as_sent(hounsfield.array))) == "volume_int16"
    result = remote.run(model, hounsfield)
    assert result.labelmap.same_grid(volume, tolerance=1e-12) and result.labels == LABELS
    assert result.labelmap.array.dtype == np.uint8 and result.labelmap.array.ndim == 3
    assert min(dice_per_label(result.labelmap.array, truth, LABELS).values()) >= MINIMUM_DICE, case["name"]


def test_errors_reach_the_client_as_one_line(server, tmp_path):
    remote = RemoteServer(server.url)
    model = torchscript_model(remote)
    two_channels = Volume(np.zeros((16, 16, 16, 2), np.float32))
    with pytest.raises(InputError) as refused:
        remote.run(model, two_channels)
    assert str(refused.value) == "the model takes 1 input channels; the input has 2"  # the worker's own words
    served = ", ".join(entry["model"] for entry in remote.models())
    with pytest.raises(PackageError, match=f"^the server at {server.url} serves no model nobody; it serves: "
                                           f"{re.escape(served)}$"):
        remote.find("nobody")
    (closed,) = free_ports(1)
    nobody_there = f"http://127.0.0.1:{closed}"
    with pytest.raises(WorkerError, match=f"^cannot reach the server at {nobody_there}: Connection refused$"):
        RemoteServer(nobody_there).models()
    source = write_volume(tmp_path / "two.nii.gz", two_channels)
    failed = cli_in(sys.executable, "run", model, source, tmp_path / "out.nii.gz", "--server", server.url)
    assert failed.returncode == 1
    assert failed.stderr == "error: the model takes 1 input channels; the input has 2\n"
    assert not (tmp_path / "out.nii.gz").exists()


def test_a_second_server_on_the_same_ports_is_refused_in_one_line_before_any_worker_starts(server, sample_model):
    started = time.monotonic()
    second = cli_in(SERVER_PYTHON, "serve", sample_model, "--python", sys.executable, "--http-port", server.ports[0],
                    "--grpc-port", server.ports[1], "--metrics-port", server.ports[2])
    assert second.returncode == 1
    assert second.stderr == f"error: cannot listen on 127.0.0.1 port {server.ports[0]}: Address already in use\n"
    assert time.monotonic() - started < 60  # no worker started, no Triton waited for


def test_the_default_server_listens_on_loopback_alone(server):
    listening = {(connection.laddr.ip, connection.laddr.port) for each in server.tree()
                 for connection in each.net_connections(kind="inet") if connection.status == psutil.CONN_LISTEN}
    assert len(listening) >= 3  # HTTP, gRPC, metrics
    assert all(is_loopback(ip) for ip, _port in listening), listening
    assert exposure_warning("127.0.0.1") is None and exposure_warning("::1") is None
    assert exposure_warning("0.0.0.0").startswith("listening on 0.0.0.0: anyone who can reach this machine")


def test_v2_tensors_round_trip_in_binary():
    tensors = {"volume_int16": np.arange(24, dtype=np.int16).reshape(2, 3, 4, 1),
               "ijk_to_ras": np.diag([0.7, -1.1, 3.0, 1.0]),
               "describe": np.array([b"card", "\u00e9".encode()], dtype=np.object_)}
    parts, header_length = v2.encode(tensors)
    body = b"".join(parts)
    header = json.loads(body[:header_length])
    assert [entry["datatype"] for entry in header["inputs"]] == ["INT16", "FP64", "BYTES"]
    binary = body[header_length:]  # Triton's framing: little-endian values; BYTES as a 4-byte length, then the bytes
    assert binary[:4] == b"\x00\x00\x01\x00" and len(binary) == 24 * 2 + 16 * 8 + 4 + 4 + 4 + 2
    assert binary[24 * 2 + 16 * 8:] == b"\x04\x00\x00\x00card\x02\x00\x00\x00\xc3\xa9"
    response = {"outputs": header["inputs"]}
    text = json.dumps(response).encode()
    decoded = v2.decode(text + body[header_length:], len(text))
    for name, array in tensors.items():
        assert decoded[name].shape == array.shape and np.array_equal(decoded[name], array), name
    assert v2.as_sent(np.zeros(3, np.float64)).dtype == np.float32 and v2.as_sent(np.zeros(3, bool)).dtype == np.uint8
    assert v2.as_sent(np.array([2**40])).dtype == np.float32 and v2.as_sent(np.array([7])).dtype == np.int32


def workers_of(server: Served) -> set:
    return {each.pid for each in server.tree() if "MonaiDeployerLib.inference.worker" in " ".join(
        each.cmdline())}


@pytest.fixture(scope="module")
def long_volume() -> Volume:
    """A volume whose sliding-window run on the sample model lasts long enough to be cancelled (tens of seconds)."""
    return Volume(np.random.default_rng(5).normal(0, 300, (256, 256, 200)).astype(np.float32))


def test_a_cancel_stops_the_run_on_the_server_and_the_next_request_is_worked_on_within_2_s(server, held_out,
                                                                                           long_volume):
    """Triton would run a request whose client gave up to its end: the cancel kills that run's worker, and the
    standby worker answers the next request at once."""
    remote = RemoteServer(server.url)
    model = torchscript_model(remote)
    workers_before = workers_of(server)
    outcome = {}

    def long_run():
        try:
            remote.run(model, long_volume, run_id="long-run")
        except MonaiDeployerError as error:
            outcome["error"], outcome["at"] = error, time.monotonic()

    thread = threading.Thread(target=long_run)
    thread.start()
    deadline = time.monotonic() + 120
    while remote.run_state("long-run").get("stage") != "inference":
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.1)
    cancelled_at = time.monotonic()
    assert remote.cancel_run("long-run")["cancelling"] is True
    thread.join(timeout=30)
    assert isinstance(outcome["error"], Cancelled) and str(outcome["error"]) == "cancelled by the user while inference"
    assert outcome["at"] - cancelled_at < 2.0
    case, volume, truth = held_out[0]
    result = remote.run(model, volume)
    worked_on_after = time.monotonic() - result.timings["total"] - cancelled_at  # the answer's arrival, less its run
    assert worked_on_after < 2.0, (worked_on_after, result.timings)
    assert min(dice_per_label(result.labelmap.array, truth, LABELS).values()) >= MINIMUM_DICE, case["name"]
    assert remote.run_state("long-run") == {"run_id": "long-run", "running": False, "ended": True}
    workers_after = workers_of(server)
    assert len(workers_after) == len(workers_before)  # the killed worker gone, the standby in its place, a new standby
    assert len(workers_before - workers_after) == 1


def test_a_run_past_its_time_out_is_stopped_on_the_server(server, held_out, long_volume):
    remote = RemoteServer(server.url)
    model = torchscript_model(remote)
    started = time.monotonic()
    with pytest.raises(WorkerError, match=r"^no answer from the worker within 2 s while (inference|loading the "
                                          r"model|preprocessing); run stopped$"):
        remote.run(model, long_volume, timeout=2)
    assert time.monotonic() - started < 10  # the transfer, 2 s, the kill; not the run's tens of seconds
    case, volume, truth = held_out[1]
    result = remote.run(model, volume)
    assert min(dice_per_label(result.labelmap.array, truth, LABELS).values()) >= MINIMUM_DICE, case["name"]


def cpu_seconds(processes: list) -> float:
    return sum(each.cpu_times().user for each in processes if each.is_running())


def cpu_seconds_once_idle(processes: list, deadline_seconds: float = 120) -> float:
    """Their CPU seconds once a second passes in which they used under a tenth of one."""
    deadline, before = time.monotonic() + deadline_seconds, cpu_seconds(processes)
    while True:
        time.sleep(1.0)
        now = cpu_seconds(processes)
        if now - before < 0.1:
            return now
        assert time.monotonic() < deadline, "the server's workers did not become idle"
        before = now


def test_ctrl_c_on_run_server_cancels_the_run_on_the_server(server, tmp_path, long_volume, held_out):
    remote = RemoteServer(server.url)
    model = torchscript_model(remote)
    source = write_volume(tmp_path / "long.nii.gz", long_volume)
    workers = [psutil.Process(pid) for pid in workers_of(server)]
    busy_before = cpu_seconds_once_idle(workers)  # a standby worker warming since the last test would count
    client = subprocess.Popen([sys.executable, "-m", "MonaiDeployerLib", "run", model, source, tmp_path / "out.nii.gz",
                               "--server", server.url], cwd=REPO_ROOT / "MonaiDeployer", stderr=subprocess.PIPE,
                              text=True, preexec_fn=as_in_a_terminal)
    deadline = time.monotonic() + 120
    while cpu_seconds(workers) < busy_before + 2.0:  # a worker runs it
        assert time.monotonic() < deadline and client.poll() is None, client.stderr.read()
        time.sleep(0.2)
    interrupted_at = time.monotonic()
    client.send_signal(signal.SIGINT)
    assert client.wait(timeout=30) == 130
    case, volume, truth = held_out[2]
    result = remote.run(model, volume)
    assert time.monotonic() - result.timings["total"] - interrupted_at < 2.0, result.timings
    assert min(dice_per_label(result.labelmap.array, truth, LABELS).values()) >= MINIMUM_DICE, case["name"]
    assert not (tmp_path / "out.nii.gz").exists()


def test_four_clients_of_ten_requests_each_get_their_own_answers_and_the_server_keeps_its_memory(server):
    """40 different volumes on three grids, 4 clients at once: each answer on its own input's grid and at the Dice
    target against its own truth (none lost or swapped); the server's memory after 40 requests within 10 % of after
    4."""
    remote = RemoteServer(server.url)
    model = torchscript_model(remote)
    grids = [(case["shape"], case["ijk_to_ras"]) for case in sampledata.held_out_cases()]
    requests = [(4000 + index, *grids[index % len(grids)]) for index in range(40)]
    scores = {}

    def client(share: list) -> None:
        for seed, shape, ijk_to_ras in share:
            image, truth = sampledata.render_phantom(shape, ijk_to_ras, seed)
            result = remote.run(model, Volume(image, ijk_to_ras))
            assert result.labelmap.same_grid(Volume(image, ijk_to_ras), tolerance=1e-12), seed
            scores[seed] = dice_per_label(result.labelmap.array, truth, LABELS)

    def round_of(start: int, stop: int) -> None:
        with ThreadPoolExecutor(4) as clients:
            for done in [clients.submit(client, requests[first + start:first + stop:1]) for first in (0, 10, 20, 30)]:
                done.result()

    round_of(0, 1)
    after_4 = sum(each.memory_info().rss for each in server.tree())
    round_of(1, 10)
    after_40 = sum(each.memory_info().rss for each in server.tree())
    assert sorted(scores) == [seed for seed, _shape, _grid in requests]
    assert all(min(score.values()) >= MINIMUM_DICE for score in scores.values()), scores
    assert after_40 <= 1.10 * after_4, (after_4 / 2**20, after_40 / 2**20)


def test_a_batch_on_the_server_writes_every_case_at_the_dice_target_and_names_the_corrupt_one(
        server, sample_model, mixed_inputs, tmp_path):
    """``batch --server --jobs 2``, the sample model by its path: files and DICOM series read here, run there."""
    output = tmp_path / "segmentations"
    finished = cli_in(sys.executable, "batch", sample_model, mixed_inputs["folder"], "--output-dir", output,
                      "--server", server.url, "--jobs", "2", "--json")
    assert finished.returncode == 1, finished.stderr
    lines = [json.loads(line) for line in finished.stdout.splitlines()]
    corrupt = str(mixed_inputs["folder"] / "corrupt.nii.gz")
    failed = [line for line in lines if line["event"] == "case" and line["status"] == "failed"]
    assert [line["case"] for line in failed] == [corrupt] and failed[0]["error"].startswith(f"cannot read {corrupt}")
    assert lines[-1] == {**lines[-1], "event": "summary", "cases": 5, "done": 4, "failed": 1, "skipped": 0}
    assert sorted(path.name for path in output.iterdir()) == sorted(f"{stem}.seg.nrrd" for stem in
                                                                    mixed_inputs["seeds"])
    for stem, seed in mixed_inputs["seeds"].items():
        labelmap = read_volume(output / f"{stem}.seg.nrrd")
        assert np.allclose(labelmap.ijk_to_ras, mixed_inputs["grids"][stem], atol=1e-4), stem
        scores = dice_per_label(labelmap.array, truth_on(labelmap, seed), LABELS)
        assert min(scores.values()) >= MINIMUM_DICE, (stem, scores)


@pytest.mark.parametrize("progress_over", ["gRPC", "HTTP"])
def test_a_remote_runners_job_follows_the_servers_stage_and_its_cancel_stops_the_run_there(server, long_volume,
                                                                                            held_out, progress_over,
                                                                                            monkeypatch):
    """Where this Python has tritonclient[grpc] the stage streams over gRPC; without it, it is asked over HTTP."""
    if progress_over == "HTTP":
        monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # as in a Python without tritonclient[grpc]
    with Runner(server=server.url) as remote:  # the API's Runner, whose runs are on the server
        assert isinstance(remote, RemoteRunner)
        model = remote.ready(torchscript_model(remote.server))
        assert (model.name, model.labels, model.outputs_overlap) == ("Phantom organ and lesion (tiny UNet)", LABELS,
                                                                      False)
        job = remote.submit(model, long_volume)
        deadline, fractions = time.monotonic() + 120, []
        while len(fractions) < 2:  # the sliding window's fraction, as the server's worker reports it
            fractions += [event.fraction for event in job.poll(block_seconds=0.1) if event.stage == "inference"
                          and event.fraction]
            assert not job.done and time.monotonic() < deadline, job.error
        assert fractions == sorted(fractions) and 0 < fractions[-1] < 1 and job.stage == "inference"
        assert job.request.progress_over == progress_over
        job.cancel()
        with pytest.raises(Cancelled, match=r"^cancelled by the user while inference$"):
            job.wait()
        run_id = job.request.run_id
        deadline = time.monotonic() + 2
        while remote.server.run_state(run_id)["running"]:
            assert time.monotonic() < deadline, "the run goes on on the server"
            time.sleep(0.05)
        case, volume, truth = held_out[0]
        result = remote.run(model, volume)
    assert result.package is model and result.labels == LABELS
    assert min(dice_per_label(result.labelmap.array, truth, LABELS).values()) >= MINIMUM_DICE, case["name"]


def test_the_progress_model_streams_a_runs_states_over_grpc_to_its_end(server, long_volume):
    """The decoupled model with tritonclient's own gRPC client, as any v2 client would stream it."""
    import tritonclient.grpc as grpc_client

    remote, run_id, states = RemoteServer(server.url), "streamed-run", []
    first_state, two_fractions, streamed_to_end = threading.Event(), threading.Event(), threading.Event()

    def fractions() -> list:
        return [state["fraction"] for state in states if state["running"] and state["stage"] == "inference"
                and state["fraction"]]

    def on_answer(result, error):
        assert error is None, error
        states.append(v2.json_of(result.as_numpy(v2.RESULT)))
        first_state.set()
        if len(fractions()) >= 2:
            two_fractions.set()
        if states[-1]["final"]:
            streamed_to_end.set()

    def run_until_cancelled():
        with pytest.raises(Cancelled):
            remote.run(torchscript_model(remote), long_volume, run_id=run_id)

    run = threading.Thread(target=run_until_cancelled, daemon=True)
    client = grpc_client.InferenceServerClient(remote.grpc_address())
    client.start_stream(callback=on_answer)
    try:
        run_id_input = grpc_client.InferInput(v2.RUN_ID, [1], "BYTES")
        run_id_input.set_data_from_numpy(np.array([run_id.encode()], dtype=np.object_))
        client.async_stream_infer(v2.PROGRESS, [run_id_input])  # opened before the run starts: it waits for it
        assert first_state.wait(30)
        run.start()
        assert two_fractions.wait(120), states[-3:]
        remote.cancel_run(run_id)
        assert streamed_to_end.wait(30), states[-3:]
    finally:
        client.stop_stream()
        client.close()
        run.join(60)
    assert not states[0]["running"] and fractions() == sorted(fractions()), states
    assert fractions()[-1] < 1, "the cancel came before the run's end"
    assert states[-1] == {"run_id": run_id, "running": False, "ended": True, "final": True}
    assert [state["final"] for state in states].count(True) == 1


class TokenCheckingProxy(BaseHTTPRequestHandler):
    """A stand-in for the TLS proxy that checks tokens in front of a server (an ingress, oauth2-proxy): a real
    reverse proxy on loopback, without the TLS, that forwards only requests bearing ``TOKEN``."""

    TOKEN = "s3cret"
    upstream = None  # (host, port) of the server behind it
    FORWARDED = ("Content-Type", "Inference-Header-Content-Length")

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Authorization") != f"Bearer {self.TOKEN}":
            return self._answer(401, {}, b'{"error": "unauthorized"}')
        connection = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            connection.request("POST", self.path, body, {name: self.headers[name] for name in self.FORWARDED
                                                         if self.headers.get(name)})
            response = connection.getresponse()
            self._answer(response.status, {name: response.getheader(name) for name in self.FORWARDED
                                           if response.getheader(name)}, response.read())
        finally:
            connection.close()

    def _answer(self, status: int, headers: dict, body: bytes) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_arguments) -> None:
        pass


def test_a_client_sends_its_token_to_a_proxy_in_front_of_the_server_and_a_refusal_is_one_line(
        server, held_out, monkeypatch, tmp_path):
    handler = type("Proxy", (TokenCheckingProxy,), {"upstream": ("127.0.0.1", server.ports[0])})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{proxy.server_address[1]}"
    try:
        monkeypatch.delenv("MONAIDEPLOYER_SERVER_TOKEN", raising=False)
        with pytest.raises(WorkerError, match=rf"^the server at {url} refused the credentials \(HTTP 401\): set "
                                              r"MONAIDEPLOYER_SERVER_TOKEN to a token its proxy accepts$"):
            RemoteServer(url).models()
        monkeypatch.setenv("MONAIDEPLOYER_SERVER_TOKEN", TokenCheckingProxy.TOKEN)
        remote = RemoteServer(url)
        case, volume, truth = held_out[0]
        result = remote.run(torchscript_model(remote), volume)
        assert min(dice_per_label(result.labelmap.array, truth, LABELS).values()) >= MINIMUM_DICE, case["name"]
        source = write_volume(tmp_path / "case.nii.gz", volume)
        by_cli = cli_in(sys.executable, "run", torchscript_model(remote), source, tmp_path / "out.nii.gz", "--server",
                        url)  # the environment's token
        assert by_cli.returncode == 0, by_cli.stderr
    finally:
        proxy.shutdown()
        proxy.server_close()
