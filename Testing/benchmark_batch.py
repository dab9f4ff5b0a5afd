"""The batch rows of Testing/benchmark.py: 20 cases of the benchmark's size through ``batch`` (one warm worker,
pipelined), against the same 20 through 20 ``run`` commands and through 20 single runs of one ``Runner`` (each
reading its file, running and writing its output, one after another; the worker's start paid once, as the batch
pays it), all in this run; ``Runner.run_many`` the same way, with the worker's resident memory case by case."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CASES = 20

from MonaiDeployerLib import Runner, Volume, read_volume, write_volume  # noqa: E402
from MonaiDeployerLib.testing import sampledata  # noqa: E402


def measure(model: str, size: int, folder: Path) -> dict:
    shape, ijk_to_ras = sampledata.benchmark_grid(size)
    inputs, runs, singles_folder, many_folder = (folder / name for name in ("batch-inputs", "runs", "singles",
                                                                           "run-many"))
    for made in (inputs, runs, singles_folder, many_folder):
        made.mkdir()
    paths = []
    for number in range(CASES):
        image, _truth = sampledata.render_phantom(shape, ijk_to_ras, seed=4000 + number)
        paths.append(write_volume(inputs / f"case{number:02d}.nii.gz", Volume(image, ijk_to_ras)))
    started = time.perf_counter()
    for number, path in enumerate(paths):
        _cli("run", model, path, runs / f"case{number:02d}.seg.nrrd")
    separate = time.perf_counter() - started
    started = time.perf_counter()  # from nothing, as the batch command starts: one worker, its start paid once
    with Runner(device="cpu") as runner:
        for number, path in enumerate(paths):
            result = runner.run(model, read_volume(path))
            write_volume(singles_folder / f"case{number:02d}.seg.nrrd", result.labelmap, result.labels,
                         result.colors)
        singles = time.perf_counter() - started
    started = time.perf_counter()
    with Runner(device="cpu") as runner:
        memory = []
        for outcome in runner.run_many(model, paths):
            write_volume(many_folder / f"case{len(memory):02d}.seg.nrrd", outcome.result.labelmap,
                         outcome.result.labels, outcome.result.colors)
            memory.append(outcome.result.worker_memory)
        many = time.perf_counter() - started
    started = time.perf_counter()
    _cli("batch", model, inputs, "--output-dir", folder / "batch")
    batch = time.perf_counter() - started
    started = time.perf_counter()
    _cli("batch", model, inputs, "--output-dir", folder / "batch-2", "--jobs", "2")
    batch_two = time.perf_counter() - started
    return {"shape": shape, "separate": separate, "singles": singles, "many": many, "batch": batch,
            "batch_two": batch_two, "memory": memory}


def _cli(*arguments) -> None:
    subprocess.run([sys.executable, "-m", "MonaiDeployerLib", *map(str, arguments), "--device", "cpu"], check=True,
                   capture_output=True, cwd=REPO_ROOT / "MonaiDeployer")


def report(measured: dict) -> None:
    shape = "x".join(map(str, measured["shape"]))
    separate = measured["separate"]
    print(f"batch: {CASES} cases of {shape}, NIfTI in, .seg.nrrd out, sample sidecar; wall time of each way from "
          "nothing to the last output (a worker's start and imports included once)")
    print(f"{'what':38s} {'seconds':>9s} {'cases/min':>10s} {'x base':>8s}")
    rows = [(f"{CASES} run commands (baseline)", separate),
            (f"{CASES} warm single runs, one Runner", measured["singles"]),
            ("Runner.run_many, one worker", measured["many"]),
            ("batch command, one worker", measured["batch"]), ("batch command, --jobs 2", measured["batch_two"])]
    for name, seconds in rows:
        print(f"{name:38s} {seconds:9.3f} {CASES / seconds * 60:10.1f} {separate / seconds:8.2f}")
    gain, against_singles = separate / measured["batch"], measured["singles"] / measured["batch"]
    print(f"target (batch): throughput >= 2.5 x the separate run commands'; measured {gain:.2f} x: "
          f"{_verdict(gain >= 2.5)}")
    print(f"target (batch): throughput >= 1.0 x the single runs of one Runner; measured {against_singles:.2f} x: "
          f"{_verdict(against_singles >= 1.0)}")
    memory = measured["memory"]
    if memory[1] and memory[-1]:
        growth = memory[-1] / memory[1]
        print(f"worker memory over a run_many batch: after case 2 {memory[1] / 2**20:.0f} MiB, after case {CASES} "
              f"{memory[-1] / 2**20:.0f} MiB (largest {max(memory) / 2**20:.0f} MiB)")
        print(f"target (batch): worker memory after case {CASES} within 5 % of after case 2; measured "
              f"{(growth - 1) * 100:+.1f} %: {_verdict(growth <= 1.05)}")


def _verdict(met: bool) -> str:
    return "meets the target" if met else "MISSES the target"
