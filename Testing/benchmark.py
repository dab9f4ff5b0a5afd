"""Benchmark: the TorchScript floor, a cold CLI run and warm runner runs, side by side in one process.

    .venv/bin/python Testing/benchmark.py [--size 128] [--repeats 3] [--skip-batch] [--skip-real-size]
        [--skip-serve] [--peer-script PATH]

Every ratio is against a baseline measured in this same run on this same machine. The floor is
raw in-process TorchScript: ``torch.jit.load`` once, then ``model(x)`` on the whole volume. The
runner rows run the same file through MonaiDeployer (worker process, files, checks) with a
sidecar that asks for the floor's intensity scaling and nothing else (the same one forward
pass), and with the sample sidecar (sliding window, softmax, back onto the input grid),
whose own floor is MONAI's sliding window called in-process. The bundle rows run the sample
bundle (the same network and pipeline, written as a MONAI Bundle config) against the warm
TorchScript run with the sample sidecar, and so do the Deploy rows: the sample NIfTI app
(Testing/deploy_apps/phantom_nifti, the same network and pipeline as SDK operators) warm in the
worker, and cold, as ``python app.py -i -o -m`` per prediction (the blog's way). With podman and
the test images of ``Testing/setup_containers.sh``, the same app packaged as a MAP runs cold in a
container per prediction (the blog's Docker way) and warm in one kept container, and a cold
command-line run of it (a new process, whose worker imports neither torch nor MONAI) is measured
against the cold container run.

The batch rows (Testing/benchmark_batch.py; --skip-batch leaves them out) run 20 cases of the same size through the
``batch`` command against 20 ``run`` commands and 20 warm single runs of one ``Runner``, and follow the worker's
memory over a batch.

The serving rows (Testing/benchmark_serve.py; --skip-serve leaves them out, and so does a machine without
.venv-triton) run the sample model through ``serve`` against the same warm run here, and a 512x512x300 volume's
transfer to a served model and back.

The real-size rows (Testing/benchmark_real_size.py; --skip-real-size leaves them out) run a 512x512x400 int16
CT-like volume: the floor on the model's working grid, the sidecar and bundle runs warm, a 14-class network, the
sidecar with nearest labels and with a foreground crop, the worker's peak memory in each run as a multiple of the
volume, and the share of voxels the sidecar labels as the mode did with full-size class scores.

The peer rows (Testing/benchmark_peer.py, with --peer-script PATH to a copy of SlicerMONAIAuto3DSeg's
MONAIAuto3DSeg/Scripts/auto3dseg_segresnet_inference.py, which is not ours to ship) run that script as the peer
does, a new process per run, on a SegResNetDS checkpoint in its format and the real-size volume as NRRD, against a
warm run of the same network, weights and transforms written as a MONAI Bundle.

The panel rows run MonaiDeployer.py's panel on Slicer 5.10's own Python layer (Testing/slicer_harness; skipped
without ../shared/slicer-5.10.0): Apply with the sample model, from the click to the result node, after the panel
warmed the worker up on entering it, then warm, then the first Apply of a panel given no time to warm up; and the
longest the GUI thread was blocked during those runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "MonaiDeployer"))

import benchmark_batch  # noqa: E402  (beside this script)
import benchmark_peer  # noqa: E402
import benchmark_real_size  # noqa: E402
import benchmark_serve  # noqa: E402

from MonaiDeployerLib import Runner, Volume, open_package, write_volume  # noqa: E402
from MonaiDeployerLib.packages.map_build import package_app  # noqa: E402
from MonaiDeployerLib.testing import sampledata  # noqa: E402
from MonaiDeployerLib.testing.selftest import SAMPLE_MODEL  # noqa: E402

SAMPLE_BUNDLE = REPO_ROOT / "MonaiDeployer" / "Resources" / "SampleModels" / "PhantomBundle"
SAMPLE_APP = REPO_ROOT / "Testing" / "deploy_apps" / "phantom_nifti"
MAP_BASE_IMAGE = "localhost/monaideployer-test-sdk:cpu"
SAMPLE_MAP = "localhost/monaideployer-phantom-map:1.0"
MODULE_FILE = REPO_ROOT / "MonaiDeployer" / "MonaiDeployer.py"


def sample_map() -> str | None:
    """The sample app packaged as a MAP on the test SDK image, or None without podman and that image."""
    podman = shutil.which("podman")
    if podman is None or subprocess.run([podman, "image", "exists", MAP_BASE_IMAGE], check=False).returncode != 0:
        return None
    return package_app(str(SAMPLE_APP), MAP_BASE_IMAGE, SAMPLE_MAP, "podman", SAMPLE_MODEL, "/opt/venv/bin/python")


def median_seconds(action, repeats: int, warmups: int = 2) -> float:
    """Median wall time of ``action`` after ``warmups`` untimed calls (TorchScript optimises on its first calls)."""
    for _ in range(warmups):
        action()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def raw_floor(model_path: str, volume: Volume, package, repeats: int) -> dict:
    import torch
    from monai.inferers import sliding_window_inference

    started = time.perf_counter()
    model = torch.jit.load(model_path, map_location="cpu").eval()
    load = time.perf_counter() - started
    # A second instance for the windows: TorchScript specialises each instance on the shapes it saw first,
    # and the worker too keeps one instance per package.
    window_model = torch.jit.load(model_path, map_location="cpu").eval()
    scale = package.settings.input.intensity
    array = (volume.array.clip(scale["a_min"], scale["a_max"]) - scale["a_min"]) / (scale["a_max"] - scale["a_min"])
    batch = torch.from_numpy(array.astype("float32"))[None, None]
    window = package.settings.inference

    def forward():
        with torch.inference_mode():
            model(batch)

    def sliding():
        with torch.inference_mode():
            sliding_window_inference(batch, window.roi_size, window.sw_batch_size, window_model,
                                     overlap=window.overlap, mode=window.mode)

    return {"load": load, "forward": median_seconds(forward, repeats), "sliding": median_seconds(sliding, repeats)}


def cold_cli(model_path: str, source: Path, target: Path, *options: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "MonaiDeployerLib", "run", model_path, str(source), str(target),
                    "--device", "cpu", "--trust", *options], check=True, capture_output=True,
                   cwd=REPO_ROOT / "MonaiDeployer")
    return time.perf_counter() - started


def warm_runner(runner: Runner, package, volume: Volume, repeats: int) -> tuple[float, dict, dict]:
    """Median of warm runs; the sample bundle is trusted for this run only (it is ours)."""
    first = runner.run(package, volume, trust=True)
    seconds = median_seconds(lambda: runner.run(package, volume, trust=True), repeats, warmups=1)
    return seconds, first.timings, runner.run(package, volume, trust=True).timings


def panel_applies(volume: Volume, repeats: int, settings: Path) -> dict | None:
    """Seconds from Apply to the result in the real panel: first (warmed up on entering), warm, and first without
    time to warm up; the model's load time; the longest GUI-thread block. None without Slicer's Python layer."""
    sys.path.insert(0, str(REPO_ROOT / "Testing"))
    import slicer_harness

    if slicer_harness.missing_reason():
        return None
    from slicer_harness.events import Heartbeat, perform, wait_until

    slicer_harness.start(settings)
    import slicer

    from MonaiDeployerLib.scene.mrml import volume_node_from_volume

    slicer_harness.load_module(MODULE_FILE)
    panel = slicer.util.getModule("MonaiDeployer").widgetRepresentation()

    def apply(widget) -> tuple[float, dict, float]:
        """Seconds from the click to the result, the run's timings, the longest GUI-thread block meanwhile."""
        with Heartbeat() as heartbeat:
            started = time.perf_counter()
            perform(widget.ui.applyButton.click)
            wait_until(lambda: not widget.isRunning(), 600, "the panel's run")
            seconds = time.perf_counter() - started
        if not widget.ui.stageLabel.text.startswith("Created "):
            raise RuntimeError(f"the panel's run failed: {widget.ui.stageLabel.text}")
        return seconds, widget.lastRunTimings, heartbeat.longest

    def enter_and_choose(wait_for_warmup: bool):
        panel.enter()
        widget = panel.self()
        parameters = widget.logic.getParameterNode()
        parameters.inputVolume = volume_node_from_volume(slicer.mrmlScene, volume, "benchmark")
        parameters.packagePath, parameters.device = str(SAMPLE_MODEL), "cpu"
        wait_until(lambda: not widget.isDescribing() and not (wait_for_warmup and widget.isWarmingUp()), 600,
                   "the info card and the warm-up")
        return widget

    try:
        widget = enter_and_choose(wait_for_warmup=True)
        first, first_timings, first_block = apply(widget)
        warm_runs = [apply(widget) for _ in range(repeats)]
        panel.exit()
        widget.logic.closeRunner()  # as after restarting Slicer; then the user presses Apply at once
        unwarmed, _, unwarmed_block = apply(enter_and_choose(wait_for_warmup=False))
        panel.exit()
    finally:
        slicer_harness.stop()
    warm = statistics.median(seconds for seconds, _, _ in warm_runs)
    block = max([first_block] + [longest for _, _, longest in warm_runs])
    return {"first": first, "warm": warm, "unwarmed": unwarmed, "load": first_timings.get("load_model", 0.0),
            "block": block, "unwarmed_block": unwarmed_block}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-real-size", action="store_true", help="leave out the 512x512x400 rows (minutes)")
    parser.add_argument("--skip-batch", action="store_true", help="leave out the batch rows (minutes)")
    parser.add_argument("--skip-serve", action="store_true", help="leave out the serving rows (a minute)")
    parser.add_argument("--peer-script", metavar="PATH",
                        help="a copy of SlicerMONAIAuto3DSeg's auto3dseg_segresnet_inference.py to compare with")
    arguments = parser.parse_args()

    shape, ijk_to_ras = sampledata.benchmark_grid(arguments.size)
    image, _ = sampledata.render_phantom(shape, ijk_to_ras, seed=7)
    volume = Volume(image, ijk_to_ras)
    with tempfile.TemporaryDirectory(prefix="monaideployer-bench-") as folder:
        folder = Path(folder)
        with_sidecar = open_package(SAMPLE_MODEL)
        whole_model = folder / "PhantomUNet-whole.ts"
        shutil.copy(SAMPLE_MODEL, whole_model)
        intensity = with_sidecar.settings.input.intensity  # the floor's input, one forward pass, no resampling
        whole_model.with_suffix(".json").write_text(json.dumps({"input": {"intensity": intensity}}))
        whole = open_package(str(whole_model))
        source = write_volume(folder / "input.nii.gz", volume)

        bundle = open_package(SAMPLE_BUNDLE)
        warm_app = open_package(SAMPLE_APP, model=SAMPLE_MODEL)
        cold_app = open_package(SAMPLE_APP, model=SAMPLE_MODEL, launch="cold")

        floor = raw_floor(SAMPLE_MODEL, volume, with_sidecar, arguments.repeats)
        cold = cold_cli(str(whole_model), source, folder / "out.nii.gz")
        cold_bundle = cold_cli(str(SAMPLE_BUNDLE), source, folder / "out-bundle.nii.gz")
        with Runner(device="cpu") as runner:
            warm, first_timings, warm_timings = warm_runner(runner, whole, volume, arguments.repeats)
            warm_sidecar, _, sidecar_timings = warm_runner(runner, with_sidecar, volume, arguments.repeats)
            warm_bundle, _, bundle_timings = warm_runner(runner, bundle, volume, arguments.repeats)
            warm_deploy, _, deploy_timings = warm_runner(runner, warm_app, volume, arguments.repeats)
            cold_deploy, _, cold_deploy_timings = warm_runner(runner, cold_app, volume, 1)
            image = sample_map()
            cold_map = warm_map = None
            map_timings = warm_map_timings = {}
            if image:
                cold_map, _, map_timings = warm_runner(
                    runner, open_package(image, mode="map", runtime="podman", launch="cold"), volume, 1)
                warm_map, _, warm_map_timings = warm_runner(
                    runner, open_package(image, mode="map", runtime="podman"), volume, arguments.repeats)
        if image:  # a new process with its own worker, which imports neither torch nor MONAI for a MAP
            cold_cli_map = cold_cli(image, source, folder / "out-map.nii.gz", "--mode", "map", "--runtime", "podman",
                                    "--cold")
        panel = panel_applies(volume, arguments.repeats, folder / "slicer-settings")
        serving = None if arguments.skip_serve else benchmark_serve.measure(SAMPLE_MODEL, str(whole_model), volume,
                                                                            arguments.repeats, folder)
        batch = None if arguments.skip_batch else benchmark_batch.measure(SAMPLE_MODEL, arguments.size, folder)
        real_size = None if arguments.skip_real_size else benchmark_real_size.measure(
            SAMPLE_MODEL, str(SAMPLE_BUNDLE), folder)
        peer = None if not arguments.peer_script else benchmark_peer.measure(
            arguments.peer_script, benchmark_real_size.real_size_volume(), folder)

    target = 1.1 * floor["forward"] + 0.050
    rows = [
        ("raw TorchScript forward (floor)", floor["forward"], floor["forward"]),
        ("raw TorchScript load", floor["load"], floor["forward"]),
        ("cold CLI run (new process)", cold, floor["forward"]),
        ("warm runner, whole volume", warm, floor["forward"]),
        ("raw MONAI sliding window (floor)", floor["sliding"], floor["sliding"]),
        ("warm runner, sample sidecar", warm_sidecar, floor["sliding"]),
        ("warm runner, sample sidecar (baseline)", warm_sidecar, warm_sidecar),
        ("warm runner, sample bundle", warm_bundle, warm_sidecar),
        ("cold CLI run, sample bundle", cold_bundle, warm_sidecar),
        ("warm Deploy app (in the worker)", warm_deploy, warm_sidecar),
        ("cold Deploy app (python app.py)", cold_deploy, warm_sidecar),
    ]
    if cold_map is not None:
        rows.append(("cold MAP (podman run)", cold_map, warm_sidecar))
        rows.append(("warm MAP (one kept container)", warm_map, warm_sidecar))
        rows.append(("cold MAP (podman run, baseline)", cold_map, cold_map))
        rows.append(("cold CLI run, MAP (new process)", cold_cli_map, cold_map))
    if panel is not None:
        rows.append(("panel: warm Apply (baseline)", panel["warm"], panel["warm"]))
        rows.append(("panel: first Apply, warmed on entering", panel["first"], panel["warm"]))
        rows.append(("panel: first Apply, no time to warm up", panel["unwarmed"], panel["warm"]))
    print(f"MonaiDeployer benchmark: {shape[0]}x{shape[1]}x{shape[2]} volume, CPU, median of {arguments.repeats}")
    print(f"{'what':38s} {'seconds':>9s} {'x base':>8s}")
    for name, seconds, baseline in rows:
        print(f"{name:38s} {seconds:9.3f} {seconds / baseline:8.2f}")
    print("first runner run:  " + _stages(first_timings))
    print("warm runner run:   " + _stages(warm_timings))
    print("warm sidecar run:  " + _stages(sidecar_timings))
    print("warm bundle run:   " + _stages(bundle_timings))
    print("warm Deploy run:   " + _stages(deploy_timings))
    print("cold Deploy run:   " + _stages(cold_deploy_timings))
    if map_timings:
        print("cold MAP run:      " + _stages(map_timings))
        print("warm MAP run:      " + _stages(warm_map_timings))
    print(f"target: warm runner <= 1.1 x floor + 50 ms = {target:.3f} s; "
          f"measured {warm:.3f} s: {_verdict(warm, target)}")
    bundle_target = 1.2 * warm_sidecar
    print(f"target: warm bundle <= 1.2 x warm TorchScript (sidecar) = {bundle_target:.3f} s; "
          f"measured {warm_bundle:.3f} s: {_verdict(warm_bundle, bundle_target)}")
    deploy_target = 1.2 * warm_sidecar + 0.100
    print(f"target: warm Deploy app <= 1.2 x warm TorchScript (sidecar) + 100 ms = {deploy_target:.3f} s; "
          f"measured {warm_deploy:.3f} s: {_verdict(warm_deploy, deploy_target)}")
    if warm_map is not None:
        map_target = 1.2 * warm_sidecar + 0.150
        print(f"target: warm MAP <= 1.2 x warm TorchScript (sidecar) + 150 ms = {map_target:.3f} s; "
              f"measured {warm_map:.3f} s: {_verdict(warm_map, map_target)}")
    if panel is not None:
        first_target = 1.2 * (panel["warm"] + panel["load"])
        print(f"target: first panel Apply <= 1.2 x (warm Apply + model load {panel['load']:.3f} s) = "
              f"{first_target:.3f} s; measured {panel['first']:.3f} s: {_verdict(panel['first'], first_target)}")
        print(f"target: longest GUI-thread block from Apply to the result, worker warmed, <= 100 ms; measured "
              f"{panel['block'] * 1000:.0f} ms: {_verdict(panel['block'], 0.100)}")
        print(f"(longest GUI-thread block of the Apply with no time to warm up, which waits for the worker's start: "
              f"{panel['unwarmed_block'] * 1000:.0f} ms)")
    if serving is not None:
        benchmark_serve.report(serving)
    if batch is not None:
        benchmark_batch.report(batch)
    if real_size is not None:
        benchmark_real_size.report(real_size, _stages)
    if peer is not None:
        benchmark_peer.report(peer, _stages)
    return 0


def _verdict(measured: float, target: float) -> str:
    return "meets the target" if measured <= target else "MISSES the target"


def _stages(timings: dict) -> str:
    return ", ".join(f"{stage} {seconds * 1000:.0f} ms" for stage, seconds in timings.items())


if __name__ == "__main__":
    sys.exit(main())
