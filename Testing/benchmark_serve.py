"""The benchmark's serving rows: ``serve`` (a real Triton from PyTriton's wheel, on loopback, its worker in this
Python) against the same package run warm by a ``Runner`` in this process.

Measured: the round trip of the benchmark's volume through the served sample network (one forward pass over the
whole volume) against the local warm run, the two taking turns so that the machine's drift reaches both alike, and
the trip alone (each round trip less its server worker's run); the transfer of a 512x512x300 CT-like volume, as
int16 (the CT's own type) and as float32, through a served threshold model (two scores from the intensity in one
forward pass): the round trip less the server's own run, as its ``total`` timing says; the server's memory (its
process tree) after the small runs, after the large ones and after small runs again: its shared memory grows to fit
the largest request, then stays; and a cohort through ``batch --server --jobs 2`` against a server with one
instance of the model and one with two, which share the cores.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from serve_process import REPO_ROOT, SERVER_PYTHON, start_serve, stop_serve

from MonaiDeployerLib import Runner, Volume, open_package, write_volume
from MonaiDeployerLib.serving.remote import RemoteServer
from MonaiDeployerLib.testing import sampledata

LARGE_SHAPE = (512, 512, 300)
LARGE_RUNS = 2  # of each type; the faster one counts
COHORT = 8  # cases of the cohort rows
ROUND_TRIPS = 3  # times the benchmark's repeats, taking turns with the local run
SMALL_AGAIN = 5


def threshold_model(folder: Path) -> str:
    """A TorchScript file whose one forward pass scores "dense" above 400 HU: the worker's own time stays small."""
    import torch

    class Threshold(torch.nn.Module):
        def forward(self, x):
            return torch.cat([0.5 - x, x - 0.5], dim=1)

    path = folder / "threshold.ts"
    torch.jit.script(Threshold().eval()).save(str(path))
    path.with_suffix(".json").write_text(json.dumps({
        "name": "Threshold (benchmark)", "version": "1.0.0",
        "input": {"intensity": {"a_min": 0.0, "a_max": 800.0, "b_min": 0.0, "b_max": 1.0, "clip": True}},
        "labels": {"1": {"name": "dense"}}}))
    return str(path)


def measure(sample_model: str, whole_model: str, volume: Volume, repeats: int, folder: Path) -> dict | None:
    """None without the server's Python (Testing/setup_triton.sh makes it). ``whole_model``: the sample network
    with a sidecar asking for one forward pass over the whole volume (the round-trip rows: its 0.3 s vary less from
    one worker process to another than the sliding window's 2 s, whose run-to-run spread passes 100 ms)."""
    if not SERVER_PYTHON.exists():
        return None
    threshold = threshold_model(folder)
    served = start_serve([whole_model, threshold, sample_model, "--device", "cpu"], models=3,
                         errors=folder / "serve.txt")
    try:
        remote = RemoteServer(served.url)
        whole_name, threshold_name, _sample_name = (line.split()[0] for line in served.listing[1:])
        package = open_package(whole_model)
        local_times, remote_times, remote_trips = [], [], []
        with Runner(device="cpu") as local:
            for _ in range(2):  # untimed: the model's load, TorchScript's first optimising calls
                local.run(package, volume)
                remote.run(whole_name, volume)
            for _ in range(ROUND_TRIPS * repeats):
                started = time.perf_counter()
                local.run(package, volume)
                local_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                result = remote.run(whole_name, volume)
                remote_times.append(time.perf_counter() - started)
                remote_trips.append(remote_times[-1] - result.timings["total"])
        memory = {"after the small runs": _resident(served)}
        hounsfield = ramp(LARGE_SHAPE)
        large = {}
        for kind, array in (("int16", hounsfield), ("float32", hounsfield.astype(np.float32))):
            transfers = []
            for _ in range(LARGE_RUNS):
                started = time.perf_counter()
                result = remote.run(threshold_name, Volume(array))
                transfers.append((time.perf_counter() - started - result.timings["total"], result.timings["total"]))
            large[kind] = min(transfers)
        memory["after the large runs"] = _resident(served)
        for _ in range(SMALL_AGAIN):
            remote.run(whole_name, volume)
        memory["after small runs again"] = _resident(served)
        cohort = {1: _cohort_seconds(sample_model, served.url, volume, folder / "one-instance")}
    finally:
        _stopped(served)
    served = start_serve([sample_model, "--device", "cpu", "--instances", "2"], models=1, errors=folder / "serve.txt")
    try:
        cohort[2] = _cohort_seconds(sample_model, served.url, volume, folder / "two-instances")
    finally:
        _stopped(served)
    return {"shape": volume.shape, "local": statistics.median(local_times), "remote": statistics.median(remote_times),
            "trip": statistics.median(remote_trips), "large": large, "memory": memory, "repeats": ROUND_TRIPS * repeats,
            "cohort": cohort}


def _cohort_seconds(sample_model: str, url: str, volume: Volume, folder: Path) -> float:
    """``batch --server URL --jobs 2`` over ``COHORT`` cases of the benchmark's size, from its start to its end."""
    inputs = folder / "inputs"
    inputs.mkdir(parents=True)
    for seed in range(COHORT):
        image, _truth = sampledata.render_phantom(volume.shape, volume.ijk_to_ras, seed=100 + seed)
        write_volume(inputs / f"case-{seed:02d}.nii.gz", Volume(image, volume.ijk_to_ras))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "MonaiDeployerLib", "batch", sample_model, str(inputs), "--output-dir",
                    str(folder / "outputs"), "--server", url, "--jobs", "2", "--json"], check=True,
                   capture_output=True, cwd=REPO_ROOT / "MonaiDeployer")
    return time.perf_counter() - started


def _stopped(served) -> None:
    left = stop_serve(served)
    if left:
        raise RuntimeError(f"serve left processes: {left}")


def ramp(shape: tuple) -> np.ndarray:
    """HU rising along I, so that the threshold's labels have one boundary: the server's own run stays short (noise
    would put a boundary at every voxel) and the transfer, which no content changes, is the most of the trip."""
    return np.broadcast_to(np.linspace(-1000, 1500, shape[0]).astype(np.int16)[:, None, None], shape).copy()


def _resident(served) -> int:
    """The process tree's proportional set size: the shared memory that Triton, its Python backend and PyTriton
    map in several processes counts once, where the sum of resident sizes counts it in each."""
    return sum(each.memory_full_info().pss for each in served.tree())


def report(measured: dict) -> None:
    size = "x".join(map(str, measured["shape"][:3]))
    overhead = measured["remote"] - measured["local"]
    print(f"serve: a real Triton (PyTriton's tritonserver) on loopback, its worker in this Python; median of "
          f"{measured['repeats']}, taking turns")
    print(f"{'what':52s} {'seconds':>9s}")
    print(f"{f'local warm run, whole volume, {size} (baseline)':52s} {measured['local']:9.3f}")
    print(f"{'remote run through serve, the same, round trip':52s} {measured['remote']:9.3f}")
    print(f"{'  the trip alone (less the server worker run)':52s} {measured['trip']:9.3f}")
    megabytes = np.prod(LARGE_SHAPE) / 2**20
    for kind, (transfer, run) in measured["large"].items():
        volume_mib = megabytes * (2 if kind == "int16" else 4)
        print(f"{f'{LARGE_SHAPE[0]}x{LARGE_SHAPE[1]}x{LARGE_SHAPE[2]} {kind} ({volume_mib:.0f} MiB) transfer':52s} "
              f"{transfer:9.3f}   (the threshold run on the server: {run:.3f} s)")
    print("server memory (proportional set size of its process tree): " + ", ".join(
        f"{when} {rss / 2**20:.0f} MiB" for when, rss in measured["memory"].items()))
    one, two = measured["cohort"][1], measured["cohort"][2]
    print(f"batch --server --jobs 2, {COHORT} cases of {size}: server with 1 instance {one:.3f} s "
          f"({COHORT * 60 / one:.1f} cases/min), with 2 instances {two:.3f} s ({COHORT * 60 / two:.1f} cases/min, "
          f"{one / two:.2f} x)")
    target = measured["local"] + 0.030
    print(f"target (serve): remote {size} round trip <= local warm run + 30 ms = {target:.3f} s; measured "
          f"{measured['remote']:.3f} s (+{overhead * 1000:.0f} ms): "
          f"{'meets the target' if measured['remote'] <= target else 'MISSES the target'}")
