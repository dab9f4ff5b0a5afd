"""The batch rows of Testing/benchmark.py: 20 cases of the benchmark's size through the ``batch`` command (one
warm worker, pipelined), against the same 20 through 20 ``run`` commands and through 20 single runs of one
``Runner`` (each reading its file, running and writing its output, one after another), first from the Runner's start
(its worker's start paid once, as the batch command pays it) and then warm; ``Runner.run_many`` on the same warm
Runner, with the worker's resident memory case by case; all in this run. The warm modes take turns on two halves of
the cases, so that the machine's drift over the minutes favours none of them."""

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
    halves = [inputs / "a", inputs / "b"]  # each ten cases: the warm modes take turns on them
    for made in (*halves, runs, singles_folder, many_folder):
        made.mkdir(parents=True)
    paths = []
    for number in range(CASES):
        image, _truth = sampledata.render_phantom(shape, ijk_to_ras, seed=4000 + number)
        half = halves[number * 2 // CASES]
        paths.append(write_volume(half / f"case{number:02d}.nii.gz", Volume(image, ijk_to_ras)))
    started = time.perf_counter()
    for number, path in enumerate(paths):
        _cli("run", model, path, runs / f"case{number:02d}.seg.nrrd")
    separate = time.perf_counter() - started
    with Runner(device="cpu") as runner:
        started = time.perf_counter()  # from nothing, as the batch command starts: the worker's start paid once
        singles(runner, model, paths, singles_folder)
        cold_singles = time.perf_counter() - started
        warm = _warm_modes_in_turn(runner, model, halves, paths, folder)
    batch, _steady = _batch_cli(model, inputs, folder / "batch")
    batch_two, _steady = _batch_cli(model, inputs, folder / "batch-2", "--jobs", "2")
    return {"shape": shape, "separate": separate, "cold_singles": cold_singles, "batch": batch,
            "batch_two": batch_two, **warm}


def _warm_modes_in_turn(runner: Runner, model: str, halves: list, paths: list, folder: Path) -> dict:
    """Warm single runs, ``run_many`` and the batch command on each half of the cases, in the order S M B on the first
    and B M S on the second, so that a machine that speeds up or slows down over the minutes favours none (the same
    mode measured minutes apart varied by 20 % here). The batch command's first case of each half pays its worker's
    start, so its seconds count from that case's output to the last."""
    measured = {"warm_singles": 0.0, "many": 0.0, "batch_steady": 0.0, "memory": []}
    half_paths = [paths[:CASES // 2], paths[CASES // 2:]]

    def many(number: int) -> None:
        for outcome in runner.run_many(model, half_paths[number]):
            name = Path(outcome.source).name.replace(".nii.gz", ".seg.nrrd")
            write_volume(folder / "run-many" / name, outcome.result.labelmap, outcome.result.labels,
                         outcome.result.colors)
            measured["memory"].append(outcome.result.worker_memory)

    modes = {"warm_singles": lambda number: singles(runner, model, half_paths[number], folder / "singles"),
             "many": many,
             "batch_steady": lambda number: _batch_cli(model, halves[number], folder / f"batch-half-{number}")[1]}
    for number, order in enumerate((list(modes), list(modes)[::-1])):
        for mode in order:
            started = time.perf_counter()
            steady = modes[mode](number)
            measured[mode] += steady if steady is not None else time.perf_counter() - started
    return measured


def _batch_cli(model: str, inputs: Path, output: Path, *options: str) -> tuple:
    """The batch command's wall time, and the seconds from its first case's output line to its last (the
    throughput once the worker is warm: the first case pays the worker's start, as the first single run does)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "MonaiDeployerLib", "batch", model, str(inputs), "--output-dir",
                                str(output), "--device", "cpu", "--json", *options], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, cwd=REPO_ROOT / "MonaiDeployer")
    finished = [time.perf_counter() for line in process.stdout if '"event": "case"' in line]
    if process.wait() != 0 or len(finished) < 2:
        raise RuntimeError(f"the batch command failed ({process.returncode}, {len(finished)} cases)")
    return time.perf_counter() - started, finished[-1] - finished[0]


def singles(runner: Runner, model: str, paths: list, folder: Path) -> None:
    """One case after another: read, run, write, as a script with one Runner does."""
    for path in paths:
        result = runner.run(model, read_volume(path))
        write_volume(folder / Path(path).name.replace(".nii.gz", ".seg.nrrd"), result.labelmap, result.labels,
                     result.colors)


def _cli(*arguments) -> None:
    subprocess.run([sys.executable, "-m", "MonaiDeployerLib", *map(str, arguments), "--device", "cpu"], check=True,
                   capture_output=True, cwd=REPO_ROOT / "MonaiDeployer")


def report(measured: dict) -> None:
    shape = "x".join(map(str, measured["shape"]))
    separate = measured["separate"]
    print(f"batch: {CASES} cases of {shape}, NIfTI in, .seg.nrrd out, sample sidecar; wall time to the last output")
    print(f"{'what':44s} {'seconds':>9s} {'cases/min':>10s} {'x base':>8s}")
    rows = [(f"{CASES} run commands (baseline)", separate),
            ("batch command, one worker (from its start)", measured["batch"]),
            ("batch command, --jobs 2 (from its start)", measured["batch_two"]),
            (f"{CASES} single runs, one Runner from its start", measured["cold_singles"]),
            (f"{CASES} single runs, the same Runner warm", measured["warm_singles"]),
            ("Runner.run_many, the same Runner warm", measured["many"])]
    for name, seconds in rows:
        print(f"{name:44s} {seconds:9.3f} {CASES / seconds * 60:10.1f} {separate / seconds:8.2f}")
    steady = measured["batch_steady"] / (CASES - 2)  # each half's first case left out
    print(f"batch command once warm: {steady:.3f} s a case from each half's first output to its last "
          f"({60 / steady:.1f} cases/min); warm single runs {measured['warm_singles'] / CASES:.3f} s a case")
    for what, gain, target in (
            ("batch command against the separate run commands", separate / measured["batch"], 2.5),
            ("batch command once warm against the warm single runs", (measured["warm_singles"] / CASES) / steady, 1.0),
            ("run_many against single runs, the same warm Runner", measured["warm_singles"] / measured["many"], 1.0)):
        print(f"target (batch): {what}: throughput >= {target:g} x; measured {gain:.2f} x: {_verdict(gain >= target)}")
    memory = measured["memory"]
    if memory[1] and memory[-1]:
        growth = memory[-1] / memory[1]
        print(f"worker memory over two run_many batches of {CASES // 2}, one worker: after case 2 "
              f"{memory[1] / 2**20:.0f} MiB, after case {CASES} "
              f"{memory[-1] / 2**20:.0f} MiB (largest {max(memory) / 2**20:.0f} MiB)")
        print(f"target (batch): worker memory after case {CASES} within 5 % of after case 2; measured "
              f"{(growth - 1) * 100:+.1f} %: {_verdict(abs(growth - 1) <= 0.05)}")


def _verdict(met: bool) -> str:
    return "meets the target" if met else "MISSES the target"
