"""The README's command-line block, verbatim, from the root of a fresh clone set up as documented; and
``pip install`` of a checkout, which gives the ``monaideployer`` command on a machine without Slicer."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nrrd
import numpy as np
from conftest import REPO_ROOT

from MonaiDeployerLib import read_volume
from MonaiDeployerLib.environment.made import MadeEnvironment, _create_virtual_environment, _python_in, _site_packages
from MonaiDeployerLib.imageio.volume import volume_suffix
from MonaiDeployerLib.testing import sampledata
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label

README_MARKER = "Try it on the sample model:"
"""The sentence in README.md's *Command line* section that the tested ```bash block follows."""
BATCH_MARKER = "Segment a cohort:"
"""The sentence in README.md's *Batches* section that the tested ```bash block follows."""
LIBRARY = Path("MonaiDeployer", "MonaiDeployerLib")


def readme_commands(marker: str = README_MARKER) -> list[str]:
    """The lines of the first ```bash block after ``marker``."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert marker in text, f"README.md lost the sentence {marker!r} that the tested block follows"
    block = re.search(r"^```bash\n(.*?)^```", text.split(marker, 1)[1], re.DOTALL | re.MULTILINE)
    assert block, f"no ```bash block after {marker!r} in README.md"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def copy_checkout(target: Path) -> Path:
    """A fresh clone of this checkout as it is now: its tracked and untracked-but-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file() or source.is_symlink():  # a tracked file deleted in the work tree is listed too
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name, follow_symlinks=False)
    return target


def layered_venv(folder: Path) -> Path:
    """A virtual environment over this test's Python's packages (torch is not installed again), made as
    MonaiDeployerLib.environment.made makes its environments; returns its python."""
    environment = MadeEnvironment(str(folder), _python_in(str(folder)), [], "a fresh clone", sys.executable)
    _create_virtual_environment(environment, None)
    return Path(environment.python)


def clean_environment(**changes) -> dict:
    """This process's environment without PYTHONPATH or an activated venv, as a user's shell has it."""
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    return {**environment, **changes}


def shell(line: str, folder: Path, timeout: float = 300, **environment) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], cwd=folder, env=clean_environment(**environment), capture_output=True,
                          text=True, timeout=timeout, check=False)


def ask(python: Path, code: str, folder: Path) -> str:
    finished = subprocess.run([str(python), "-c", code], cwd=folder, env=clean_environment(), capture_output=True,
                              text=True, timeout=120, check=False)
    assert finished.returncode == 0, finished.stderr
    return finished.stdout.strip()


def installed_here() -> list:
    """This checkout's own install into the test's Python (what the clone's install must leave alone)."""
    own = Path(_site_packages(sys.executable))
    return sorted((path.name, path.stat().st_mtime_ns) for path in own.glob("*onaideployer*"))


def segment_names(path: Path) -> dict:
    header = nrrd.read_header(str(path))
    count = sum(1 for key in header if re.fullmatch(r"Segment\d+_Name", key))
    return {int(header[f"Segment{index}_LabelValue"]): header[f"Segment{index}_Name"] for index in range(count)}


def test_the_readme_commands_run_verbatim_in_a_fresh_clone(tmp_path):
    commands = readme_commands()
    clone = copy_checkout(tmp_path / "clone")
    python = layered_venv(clone / ".venv")
    before = installed_here()
    pip_temp = tmp_path / "pip-temp"
    pip_temp.mkdir()

    set_up = shell("bash Testing/setup_venv.sh", clone, TMPDIR=str(pip_temp))
    assert set_up.returncode == 0, set_up.stdout + set_up.stderr
    assert installed_here() == before, "installing the clone changed this checkout's own install"
    # The clone's command imports the clone's library (not this checkout's, which the venv's base also holds),
    # and the install exposes MonaiDeployerLib alone: not the Slicer module beside it.
    assert (clone / ".venv" / "bin" / "monaideployer").read_text().startswith(f"#!{python}\n")
    library = ask(python, "import MonaiDeployerLib; print(MonaiDeployerLib.__file__)", clone)
    assert Path(library) == clone / LIBRARY / "__init__.py"
    assert ask(python, "import importlib.util; print(importlib.util.find_spec('MonaiDeployer'))", tmp_path) == "None"

    outputs = {}
    for line in commands:
        finished = shell(line, clone)
        assert finished.returncode == 0, f"{line}\n{finished.stdout}{finished.stderr}"
        arguments = shlex.split(line)
        if "MonaiDeployerLib.testing.sampledata" in arguments:
            outputs["image"] = clone / arguments[arguments.index("MonaiDeployerLib.testing.sampledata") + 1]
            outputs["truth"] = clone / arguments[arguments.index("--truth") + 1]
        elif "inspect" in arguments:
            assert "labels:       1=organ, 2=lesion" in finished.stdout, finished.stdout
            assert "PROBLEM" not in finished.stdout, finished.stdout
        elif "run" in arguments:
            assert arguments[0] == ".venv/bin/monaideployer"
            outputs["input"], outputs["segmentation"] = clone / arguments[-2], clone / arguments[-1]
    assert set(outputs) == {"image", "truth", "input", "segmentation"}, f"the README block lost a step: {commands}"
    assert outputs["input"] == outputs["image"] and outputs["segmentation"].name.endswith(".seg.nrrd")

    image, truth, segmentation = (read_volume(outputs[name]) for name in ("image", "truth", "segmentation"))
    assert segmentation.same_grid(image, tolerance=1e-5)
    assert segment_names(outputs["segmentation"]) == {1: "organ", 2: "lesion"}
    assert set(np.unique(segmentation.array)) == {0, 1, 2}
    scores = dice_per_label(segmentation.array, truth.array, (1, 2))
    assert min(scores.values()) >= MINIMUM_DICE, scores
    check_the_batch_block(clone)


def check_the_batch_block(clone: Path) -> None:
    """The *Batches* block in the same clone: each phantom it writes is segmented into the output folder."""
    seeds = {case["name"]: case["seed"] for case in sampledata.held_out_cases()}
    written = {}
    for line in readme_commands(BATCH_MARKER):
        finished = shell(line, clone)
        assert finished.returncode == 0, f"{line}\n{finished.stdout}{finished.stderr}"
        arguments = shlex.split(line)
        if "--case" in arguments:
            written[arguments[arguments.index("--case") + 1]] = Path(arguments[arguments.index("--case") - 1])
        elif "batch" in arguments:
            assert arguments[0] == ".venv/bin/monaideployer"
            output = clone / arguments[arguments.index("--output-dir") + 1]
            assert f"{len(written)} cases: {len(written)} done, 0 failed" in finished.stdout, finished.stdout
    assert len(written) >= 2, "the Batches block lost a step"
    for case, path in written.items():
        labelmap = read_volume(output / (path.name[:-len(volume_suffix(path.name))] + ".seg.nrrd"))
        truth = sampledata.render_phantom(labelmap.shape, labelmap.ijk_to_ras, seeds[case])[1]
        scores = dice_per_label(labelmap.array, truth, (1, 2))
        assert min(scores.values()) >= MINIMUM_DICE, (case, scores)


def test_pip_install_of_a_checkout_gives_the_command(tmp_path):
    checkout = copy_checkout(tmp_path / "checkout")  # its build folders land in the copy, not in this checkout
    python = layered_venv(tmp_path / "server")
    installed = shell(f"{shlex.quote(str(python))} -m pip install -q --disable-pip-version-check --no-deps "
                      f"--no-build-isolation {shlex.quote(str(checkout))}", tmp_path, TMPDIR=str(tmp_path))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site_packages = Path(_site_packages(str(python)))

    command = tmp_path / "server" / "bin" / "monaideployer"
    invocations = {"monaideployer": str(command), "python -m MonaiDeployerLib": f"{python} -m MonaiDeployerLib"}
    for program, line in invocations.items():
        helped = shell(f"{line} --help", tmp_path)
        assert helped.returncode == 0, helped.stderr
        assert helped.stdout.startswith(f"usage: {program} [-h] COMMAND"), helped.stdout
        assert all(name in helped.stdout for name in ("inspect", "run", "env", "package"))
    missing = shell(f"{command} inspect no-such-model.ts", tmp_path)  # main() returns 1; the script exits with it
    assert (missing.returncode, missing.stderr) == (1, "error: model package not found: no-such-model.ts\n")

    # The installed copy, whole: every module of the library, and nothing of the Slicer module beside it.
    library = Path(ask(python, "import MonaiDeployerLib; print(MonaiDeployerLib.__file__)", tmp_path)).parent
    assert library == site_packages / "MonaiDeployerLib"
    wanted = sorted(path.relative_to(checkout / LIBRARY) for path in (checkout / LIBRARY).rglob("*.py"))
    assert sorted(path.relative_to(library) for path in library.rglob("*.py")) == wanted
    assert not (site_packages / "MonaiDeployer.py").exists() and not (site_packages / "Resources").exists()
    assert ask(python, "import importlib.util; print(importlib.util.find_spec('MonaiDeployer'))", tmp_path) == "None"

    # torch and MONAI only as extras: the command line starts in a Python without them (a MAP needs neither).
    metadata = next(site_packages.glob("monaideployer-*.dist-info")).joinpath("METADATA").read_text()
    core = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert core and not any(re.search(r"\b(torch|monai)\b", line) for line in core), core
    no_torch = ask(python, "import sys; sys.modules.update(torch=None, monai=None)\n"
                           "from MonaiDeployerLib.__main__ import main\n"
                           "sys.argv = ['monaideployer', '--help']\n"
                           "try: main()\nexcept SystemExit as done: print(done.code)", tmp_path)
    assert no_torch.startswith("usage: monaideployer") and no_torch.endswith("0"), no_torch
