"""Environments made for a package from its metadata: real venvs, real pip installs from PyPI.

The sample bundle was made with MONAI 1.3.0 (its metadata says so); the test environment has
MONAI 1.6.1 and numpy 2. Its made environment gets monai==1.3.0 and numpy 1.x (MONAI 1.3 needs it)
over the test environment's other packages, whose torch it reuses.
"""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, assert_held_out_segmented

from MonaiDeployerLib import PackageError, Runner, open_package
from MonaiDeployerLib.environment.made import environment_for, list_environments, make_environment, remove_environment
from MonaiDeployerLib.testing.selftest import SAMPLE_BUNDLE

LABELS = {1: "organ", 2: "lesion"}


def bundle_made_with(folder, monai_version: str, required: dict | None = None) -> str:
    """A copy of the sample bundle whose metadata says it was made with ``monai_version``."""
    shutil.copytree(SAMPLE_BUNDLE, folder)
    metadata_path = folder / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["monai_version"] = monai_version
    if required is not None:
        metadata["required_packages_version"] = required
    metadata_path.write_text(json.dumps(metadata))
    return str(folder)


@pytest.fixture(scope="module")
def made_for_sample_bundle():
    lines = []
    made = make_environment(open_package(SAMPLE_BUNDLE), progress=lines.append)
    return made, lines


def test_a_bundle_made_with_another_monai_runs_in_an_environment_made_for_it(made_for_sample_bundle, held_out):
    made, lines = made_for_sample_bundle
    package = open_package(SAMPLE_BUNDLE)
    assert made.made_now and made.ready
    assert {"monai==1.3.0", "numpy>=1.24.0,<2", "torch>=2.0.0,<3"} <= set(made.requirements)
    assert any(line.startswith("Successfully installed") and "monai-1.3.0" in line for line in lines), lines[-3:]
    with Runner(python=made.python, device="cpu") as runner:
        installed = runner.environment()["packages"]
        assert installed["monai"] == "1.3.0" and installed["numpy"].startswith("1.")
        assert installed["torch"] == importlib.metadata.version("torch")  # the base's torch, reused
        assert_held_out_segmented(runner, package, held_out, LABELS, "monai 1.3.0")
    assert not any(name.startswith("torch") for name in os.listdir(site_packages_of(made.python)))


def site_packages_of(python: str) -> str:
    return subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_a_second_run_reuses_the_made_environment(made_for_sample_bundle, held_out, tmp_path):
    made, _ = made_for_sample_bundle
    again = make_environment(open_package(SAMPLE_BUNDLE), progress=pytest.fail)  # pip must not run
    assert (again.folder, again.made_now) == (made.folder, False)

    from MonaiDeployerLib import write_volume

    source, output = tmp_path / "case.nii.gz", tmp_path / "seg.nii.gz"
    write_volume(source, held_out[0][1])
    finished = subprocess.run([sys.executable, "-m", "MonaiDeployerLib", "run", SAMPLE_BUNDLE, str(source), str(output),
                               "--trust", "--made-environment", "--json"],
                              capture_output=True, text=True, cwd=REPO_ROOT / "MonaiDeployer", check=False)
    assert finished.returncode == 0, finished.stderr
    assert "make_environment" not in json.loads(finished.stdout)["timings"]


def test_made_environments_are_listed_with_their_disk_use_and_removed(made_for_sample_bundle):
    made, _ = made_for_sample_bundle
    listed = subprocess.run([sys.executable, "-m", "MonaiDeployerLib", "env", "list", "--json"],
                            capture_output=True, text=True, cwd=REPO_ROOT / "MonaiDeployer", check=True)
    entry = next(entry for entry in json.loads(listed.stdout) if entry["name"] == made.name)
    assert entry["ready"] and entry["package"] == "Phantom organ and lesion bundle"
    assert 10 * 2**20 < entry["bytes"] < 500 * 2**20  # monai and numpy, not torch
    with pytest.raises(PackageError, match=r"no made environment called '\.\./x'"):
        remove_environment("../x")


def test_a_failed_install_shows_pips_last_lines_and_leaves_nothing_marked_usable(tmp_path):
    package = open_package(bundle_made_with(tmp_path / "bundle", "1.6.1", {"monaideployer-no-such-package": "1.0"}))
    with pytest.raises(PackageError, match=r"installing .*monaideployer-no-such-package>=1\.0.* failed: .*"
                                           r"No matching distribution found for monaideployer-no-such-package>=1\.0"):
        make_environment(package)
    assert not os.path.exists(environment_for(package).folder)
    assert all(made.ready for made in list_environments())


def test_two_packages_with_conflicting_requirements_run_one_after_the_other(made_for_sample_bundle, tmp_path,
                                                                            held_out):
    """monai==1.3.0 and monai==1.4.0, each in its own environment, in one session: A, B, then A again."""
    made_13, _ = made_for_sample_bundle
    newer = open_package(bundle_made_with(tmp_path / "bundle-1.4", "1.4.0"))
    made_14 = make_environment(newer)
    assert made_14.folder != made_13.folder
    for made, package, version in ((made_13, open_package(SAMPLE_BUNDLE), "1.3.0"), (made_14, newer, "1.4.0"),
                                   (made_13, open_package(SAMPLE_BUNDLE), "1.3.0")):
        with Runner(python=made.python, device="cpu") as runner:
            assert runner.environment()["packages"]["monai"] == version
            assert_held_out_segmented(runner, package, held_out[:1], LABELS, version)
    remove_environment(made_14.name)
    assert not os.path.exists(made_14.folder)


def test_two_runs_asking_at_once_make_the_environment_once(tmp_path):
    """Slicer and a batch run starting together: one installs, the other waits and finds it made."""
    package = open_package(bundle_made_with(tmp_path / "bundle-1.5", "1.5.0"))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        made = list(pool.map(lambda _: make_environment(package), range(2)))
    assert sorted(environment.made_now for environment in made) == [False, True]
    assert made[0].folder == made[1].folder and made[0].ready
    remove_environment(made[0].name)
    assert not any(name.startswith(made[0].name) for name in os.listdir(os.path.dirname(made[0].folder)))


def test_installing_into_slicers_python_keeps_the_packages_slicer_ships():
    from MonaiDeployerLib.environment.made import shipped_constraints

    installed = {"numpy": "2.4.6", "simpleitk": "2.5.0", "monai": "1.6.1", "requests": "2.32.3"}
    assert shipped_constraints(installed) == "numpy==2.4.6\nrequests==2.32.3\nsimpleitk==2.5.0\n"


def test_a_package_already_imported_here_needs_a_restart_to_change():
    from MonaiDeployerLib.environment.made import needs_restart

    assert needs_restart(["monai>=1.4", "nibabel", "pytorch-ignite==0.4.11"], ["monai.bundle", "numpy"]) == ["monai"]
    assert needs_restart(["SimpleITK==2.5"], ["SimpleITK"]) == ["SimpleITK"]


def test_a_deploy_app_runs_in_an_environment_made_from_its_requirements_txt(tmp_path, held_out):
    """The phantom NIfTI app pinned to MONAI 1.4.0 in its requirements.txt, run warm in the environment made for it."""
    from MonaiDeployerLib.testing.selftest import SAMPLE_MODEL

    app = tmp_path / "app"
    shutil.copytree(REPO_ROOT / "Testing" / "deploy_apps" / "phantom_nifti", app)
    (app / "requirements.txt").write_text("# what the app was written against\nmonai==1.4.0\n")
    package = open_package(str(app), model=SAMPLE_MODEL)
    made = make_environment(package)
    assert made.requirements == ["monai-deploy-app-sdk>=0.6", "monai==1.4.0"]
    with Runner(python=made.python, device="cpu") as runner:
        assert runner.environment()["packages"]["monai"] == "1.4.0"
        assert_held_out_segmented(runner, package, held_out[:1], LABELS, "deploy app, monai 1.4.0")
