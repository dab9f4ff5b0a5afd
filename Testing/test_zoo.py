"""Model Zoo bundles by name, offline: a real HTTP server on loopback serves an index in the Model Zoo's format
(``model_info.json``: NAME_vVERSION with source and SHA-1) and archives made here, laid out as the Zoo's are
(``NAME/configs/...``): the sample bundle, which reaches the Dice target, and real Model Zoo configs. Each failure
(a wrong checksum, a truncated archive, a 404, a server vanishing mid-transfer, an escaping entry) is one line and
leaves nothing in the cache; a kill mid-download leaves nothing the next download keeps."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from zoo_server import DATA_LICENCE, PHANTOM, SAMPLE_BUNDLE, zoo_archive

from MonaiDeployerLib import open_package, read_volume, write_volume
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label

LABELS = {1: "organ", 2: "lesion"}


@pytest.fixture
def home(tmp_path) -> Path:
    """A MONAIDEPLOYER_HOME of the test's own: its zoo cache and trust list start empty."""
    return tmp_path / "home"


def zoo_cli(home: Path, *arguments, index: str | None = None, **options) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "MonaiDeployer"), "MONAIDEPLOYER_HOME": str(home)}
    if index:
        environment["MONAIDEPLOYER_ZOO_INDEX"] = index
    return subprocess.run([sys.executable, "-m", "MonaiDeployerLib", *map(str, arguments)], capture_output=True,
                          text=True, env=environment, timeout=300, check=False, **options)


def cache_of(home: Path) -> list:
    """Everything in the zoo cache but the index's kept copy."""
    zoo = home / "zoo"
    return sorted(str(path.relative_to(zoo)) for path in zoo.rglob("*") if "indexes" not in path.parts) \
        if zoo.is_dir() else []


def test_zoo_list_groups_the_index_by_name_newest_first_and_describes_what_is_downloaded(zoo, home):
    listed = zoo_cli(home, "zoo", "list", "--index", zoo.index_url, "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert document["index"] == zoo.index_url and document["offline_reason"] == ""
    bundles = {bundle["name"]: bundle for bundle in document["bundles"]}
    assert list(bundles) == [PHANTOM, "spleen_ct_segmentation"]
    assert bundles[PHANTOM]["versions"] == ["1.0.0", "0.9.0"] and bundles[PHANTOM]["newest"] == "1.0.0"
    assert bundles["spleen_ct_segmentation"]["description"] == ""  # known once downloaded
    downloaded = zoo_cli(home, "zoo", "download", "spleen_ct_segmentation", "--index", zoo.index_url)
    assert downloaded.returncode == 0, downloaded.stderr
    text = zoo_cli(home, "zoo", "list", "--index", zoo.index_url)
    assert text.stdout.splitlines()[0].startswith(f"the Model Zoo index at {zoo.index_url}, read ")
    assert ("spleen_ct_segmentation 0.5.9 (1 versions, downloaded: 0.5.9)\n  A pre-trained model for volumetric (3D) "
            "segmentation of the spleen from CT image") in text.stdout
    listed = json.loads(zoo_cli(home, "zoo", "list", "--index", zoo.index_url, "--json").stdout)
    spleen = next(bundle for bundle in listed["bundles"] if bundle["name"] == "spleen_ct_segmentation")
    assert spleen["size_bytes"] == len(zoo.archives["spleen_ct_segmentation_v0.5.9"])


def test_download_shows_its_progress_and_licence_and_is_not_made_twice(zoo, home):
    downloaded = zoo_cli(home, "zoo", "download", PHANTOM, "--index", zoo.index_url)
    assert downloaded.returncode == 0, downloaded.stderr
    folder = Path(downloaded.stdout.strip())
    assert folder == home / "zoo" / PHANTOM / "1.0.0"
    assert (folder / "configs" / "metadata.json").is_file() and (folder / "models" / "model.pt").is_file()
    assert re.search(r"^downloaded \d+\.\d KiB at \d+\.\d [KMG]iB/s$", downloaded.stderr, re.MULTILINE), \
        downloaded.stderr  # the line for a log; a terminal gets tqdm's bar
    assert f"licence: for non-commercial use only (LICENSE: Apache License; docs/data_license.txt: {DATA_LICENCE})" \
        in downloaded.stderr
    again = zoo_cli(home, "zoo", "download", PHANTOM, "--index", zoo.index_url)
    assert again.returncode == 0 and again.stdout == downloaded.stdout, again.stderr
    assert zoo.requests[f"/files/{PHANTOM}_v1.0.0.zip"] == 1
    older = zoo_cli(home, "zoo", "download", PHANTOM, "--version", "0.9.0", "--index", zoo.index_url)
    assert Path(older.stdout.strip()) == home / "zoo" / PHANTOM / "0.9.0"
    unknown = zoo_cli(home, "zoo", "download", "phantom_organ", "--index", zoo.index_url)
    assert unknown.returncode == 1
    assert unknown.stderr == (f"error: the Model Zoo index at {zoo.index_url} has no bundle phantom_organ (did you "
                              f"mean {PHANTOM}?)\n")


FAULTS = {
    "wrong-checksum": (dict(checksum="0" * 40), r"does not have the index's checksum \(SHA-1 [0-9a-f]{40}, expected "
                                                r"0{40}\): nothing was kept"),
    "truncated": (dict(truncate=True), r"cannot be used: it is a corrupt zip file \(truncated or damaged\)"),
    "missing": (dict(fault="missing"), r"cannot download .* HTTP 404"),
    "vanishing": (dict(fault="vanishing"), r"was cut off after \d+ bytes \(ChunkedEncodingError\); nothing was kept"),
    "escaping": (dict(escaping=True), r"cannot be used: it has an entry that escapes its folder "
                                      r"\(broken/\.\./\.\./outside\.txt\); refusing the archive"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failed_download_is_one_line_and_leaves_nothing_in_the_cache_and_the_next_good_one_works(zoo, home,
                                                                                                   fault):
    how, message = FAULTS[fault]
    data = zoo_archive("broken", bundle=SAMPLE_BUNDLE, escaping=how.get("escaping", False))
    if how.get("truncate"):
        data = data[:len(data) // 2]  # the index's checksum is of these bytes: the zip itself is broken
    zoo.publish("broken", "1.0.0", data, how.get("checksum"), how.get("fault"))
    failed = zoo_cli(home, "zoo", "download", "broken", "--index", zoo.index_url)
    assert failed.returncode == 1 and failed.stdout == ""
    assert len(failed.stderr.strip().splitlines()) == 1 and re.search(message, failed.stderr), failed.stderr
    assert cache_of(home) == []
    assert not (home.parent / "outside.txt").exists() and not (home / "outside.txt").exists()
    zoo.publish("broken", "1.0.0", zoo.good)
    healed = zoo_cli(home, "zoo", "download", "broken", "--index", zoo.index_url)
    assert healed.returncode == 0, healed.stderr
    assert (Path(healed.stdout.strip()) / "configs" / "inference.json").is_file()


def test_a_download_killed_midway_leaves_nothing_that_the_next_download_keeps(zoo, home):
    zoo.publish("large", "1.0.0", zoo_archive("large", bundle=SAMPLE_BUNDLE, padding=3 << 20), fault="slow")
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "MonaiDeployer"), "MONAIDEPLOYER_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "MonaiDeployerLib", "zoo", "download", "large", "--index",
                                zoo.index_url], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not [path for path in (home / "zoo").glob("monaideployer-*/archive.zip") if path.stat().st_size]:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert [path.name for path in (home / "zoo").iterdir() if path.name.startswith("monaideployer-")]
    assert not (home / "zoo" / "large").exists()
    downloaded = zoo_cli(home, "zoo", "download", PHANTOM, "--index", zoo.index_url)
    assert downloaded.returncode == 0, downloaded.stderr
    assert cache_of(home) == [PHANTOM, *sorted(f"{PHANTOM}/{path}" for path in ["1.0.0", "1.0.0.json"]),
                              *[f"{PHANTOM}/1.0.0/{path}" for path in _bundle_files(home / "zoo" / PHANTOM / "1.0.0")]]


def test_a_cancel_that_comes_with_the_last_bytes_still_keeps_nothing(zoo, home, monkeypatch):
    """The panel's Cancel can come after the last chunk: the download stops before it unpacks or moves anything."""
    import threading

    from MonaiDeployerLib import Cancelled
    from MonaiDeployerLib.zoo.catalogue import read_catalogue
    from MonaiDeployerLib.zoo.download import download

    monkeypatch.setenv("MONAIDEPLOYER_HOME", str(home))
    archive = read_catalogue(zoo.index_url).archive(PHANTOM)
    cancel, told = threading.Event(), []

    def progress(done, total, _rate):
        told.append(done)
        if done == total:
            cancel.set()  # as the user clicks Cancel while the checksum is checked

    with pytest.raises(Cancelled, match=f"^cancelled by the user while downloading {PHANTOM}$"):
        download(archive, progress, cancel)
    assert told[-1] == len(zoo.good) and cache_of(home) == []


def _bundle_files(folder: Path) -> list:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_run_zoo_name_asks_for_trust_with_the_licence_then_reaches_the_dice_target_and_runs_offline(
        zoo, home, held_out, tmp_path):
    case, volume, truth = held_out[0]
    source = write_volume(tmp_path / f"{case['name']}.nii.gz", volume)
    refused = zoo_cli(home, "run", f"zoo:{PHANTOM}", source, tmp_path / "refused.nii.gz", index=zoo.index_url)
    assert refused.returncode == 1 and refused.stderr.startswith("downloaded "), refused.stderr  # on first use
    assert refused.stderr.count("\n") == 2 and refused.stderr.splitlines()[1].startswith("error: "), refused.stderr
    assert "is not trusted yet" in refused.stderr and "Its licence: for non-commercial use only" in refused.stderr
    assert not (tmp_path / "refused.nii.gz").exists()
    for case, volume, truth in held_out:
        source = write_volume(tmp_path / f"{case['name']}.nii.gz", volume)
        output = tmp_path / f"{case['name']}.seg.nrrd"
        ran = zoo_cli(home, "run", f"zoo:{PHANTOM}", source, output, "--trust", "--device", "cpu",
                      index=zoo.index_url)
        assert ran.returncode == 0, ran.stderr
        labelmap = read_volume(output)
        assert labelmap.same_grid(volume, tolerance=1e-6), case["name"]
        scores = dice_per_label(labelmap.array, truth, LABELS)
        assert min(scores.values()) >= MINIMUM_DICE, (case["name"], scores)
    assert zoo.requests[f"/files/{PHANTOM}_v1.0.0.zip"] == 1
    zoo.shutdown()
    zoo.server_close()  # the Model Zoo gone: the cache and the index's last copy answer
    offline = zoo_cli(home, "zoo", "list", "--index", zoo.index_url)
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.splitlines()[0].startswith(
        f"the Model Zoo index at {zoo.index_url} cannot be read (cannot connect (offline, or the server is down)): "
        "this is its last copy, from ")
    output = tmp_path / "offline.nii.gz"
    ran = zoo_cli(home, "run", f"zoo:{PHANTOM}", source, output, "--trust", "--device", "cpu", index=zoo.index_url)
    assert ran.returncode == 0, ran.stderr
    assert "cannot be read (cannot connect (offline, or the server is down)): using its copy of " in ran.stderr
    assert min(dice_per_label(read_volume(output).array, truth, LABELS).values()) >= MINIMUM_DICE
    never_downloaded = zoo_cli(home, "run", "zoo:spleen_ct_segmentation", source, output, index=zoo.index_url)
    assert never_downloaded.returncode == 1
    assert never_downloaded.stderr.splitlines()[-1] == (
        f"error: cannot download spleen_ct_segmentation 0.5.9 from {zoo.url}/files/spleen_ct_segmentation_v0.5.9.zip: "
        "cannot connect (offline, or the server is down)")


def test_the_api_opens_a_zoo_reference_and_an_unknown_version_is_one_line(zoo, home, monkeypatch):
    monkeypatch.setenv("MONAIDEPLOYER_HOME", str(home))
    monkeypatch.setenv("MONAIDEPLOYER_ZOO_INDEX", zoo.index_url)
    package = open_package(f"zoo:{PHANTOM}@0.9.0")
    assert (package.mode, package.name, package.labels) == ("bundle", "Phantom organ and lesion bundle", LABELS)
    assert package.path == str(home / "zoo" / PHANTOM / "0.9.0")
    assert package.settings.licence.startswith("for non-commercial use only")
    from MonaiDeployerLib import PackageError

    with pytest.raises(PackageError, match=rf"^the Model Zoo index at {re.escape(zoo.index_url)} has no version "
                                           rf"2\.0\.0 of {PHANTOM}; it has 1\.0\.0, 0\.9\.0$"):
        open_package(f"zoo:{PHANTOM}@2.0.0")
    with pytest.raises(PackageError, match=r"^not a Model Zoo reference: zoo:\.\./etc"):
        open_package("zoo:../etc")
    monkeypatch.delenv("MONAIDEPLOYER_ZOO_INDEX")
    assert open_package(f"zoo:{PHANTOM}@1.0.0", zoo_index=zoo.index_url).path == str(home / "zoo" / PHANTOM / "1.0.0")
    shutil.rmtree(home)
