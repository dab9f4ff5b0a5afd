"""Bundle mode end to end: the phantom bundle in its three forms through API, CLI and MRML; trust; errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, assert_held_out_segmented
from make_sample_bundle import BUNDLE_FOLDER, export_torchscript, export_zip

from MonaiDeployerLib import InputError, PackageError, Runner, Volume, open_package, read_volume, write_volume
from MonaiDeployerLib.packages.trust import TrustList
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label

LABELS = {1: "organ", 2: "lesion"}


@pytest.fixture(scope="module")
def bundle_forms(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("forms")
    return {"folder": BUNDLE_FOLDER,
            "zip": export_zip(BUNDLE_FOLDER, folder / "PhantomBundle.zip"),
            "torchscript": export_torchscript(BUNDLE_FOLDER, folder / "renamed_after_export.pt")}


@pytest.fixture
def own_bundle(tmp_path) -> Path:
    """A writable copy of the phantom bundle folder, for tests that break one of its files."""
    return Path(shutil.copytree(BUNDLE_FOLDER, tmp_path / "PhantomBundle"))


@pytest.mark.parametrize("form", ["folder", "zip", "torchscript"])
def test_the_phantom_bundle_segments_held_out_volumes_in_each_form(runner, bundle_forms, held_out, form):
    package = open_package(bundle_forms[form])
    assert (package.mode, package.settings.form, package.labels) == ("bundle", form, LABELS)
    assert_held_out_segmented(runner, package, held_out, LABELS, form)


@pytest.mark.parametrize("form", ["folder", "zip", "torchscript"])
def test_the_mrml_logic_puts_bundle_labelmaps_on_each_held_out_grid(scene, runner, bundle_forms, form):
    from MonaiDeployerLib.scene import mrml
    from MonaiDeployerLib.scene.noderun import NodeSegmentation
    from MonaiDeployerLib.testing import sampledata
    from MonaiDeployerLib.testing.selftest import held_out_node, node_array

    package = open_package(bundle_forms[form])
    for case in sampledata.held_out_cases():
        node, truth = held_out_node(scene, case)
        output = NodeSegmentation(runner, package, node, trust=True).wait()
        assert np.allclose(mrml.ijk_to_ras(output), mrml.ijk_to_ras(node), atol=1e-9)
        assert [output.GetDisplayNode().GetColorNode().GetColorName(value) for value in LABELS] == ["organ", "lesion"]
        scores = dice_per_label(node_array(output), truth, LABELS)
        assert min(scores.values()) >= MINIMUM_DICE, (case["name"], form, scores)


def test_a_second_bundle_run_reuses_the_built_pipeline(bundle_forms, held_out):
    _, volume, _ = held_out[1]
    with Runner(device="cpu") as fresh:
        first = fresh.run(bundle_forms["zip"], volume, trust=True)
        second = fresh.run(bundle_forms["zip"], volume, trust=True)
    assert "load_model" in first.timings and "load_model" not in second.timings
    assert second.warm == {"worker": True, "imports": True, "model": True}
    assert np.array_equal(first.labelmap.array, second.labelmap.array)


def test_monai_bundle_run_on_files_gives_the_same_labels_as_the_in_memory_run(runner, tmp_path, held_out):
    """MONAI's own runner (real LoadImaged, evaluator, Invertd at full size, SaveImaged) on NIfTI files is the
    reference; ours takes its Invertd -> AsDiscreted(argmax) without full-size scores."""
    bundle = Path(shutil.copytree(BUNDLE_FOLDER, tmp_path / "bundle"))
    (bundle / "test_data").mkdir()
    for case, volume, _ in held_out:
        write_volume(bundle / "test_data" / f"{case['name']}.nii.gz", volume)
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
                    "--bundle_root", str(bundle)], cwd=bundle, check=True, capture_output=True)
    package = open_package(bundle)
    for case, volume, _ in held_out:
        reference = read_volume(bundle / "eval" / f"{case['name']}_seg.nii.gz")
        ours = runner.run(package, volume, trust=True)
        assert reference.same_grid(ours.labelmap, tolerance=1e-5)
        agreement = np.mean(reference.array.astype(np.uint8) == ours.labelmap.array)
        assert agreement >= 0.9999, (case["name"], agreement)


@pytest.mark.parametrize(("form", "case_index"), [("folder", 0), ("zip", 1), ("torchscript", 2)])
def test_cli_runs_a_trusted_bundle_to_named_segments(tmp_path, bundle_forms, held_out, form, case_index):
    case, volume, truth = held_out[case_index]
    source, output = tmp_path / "case.nii.gz", tmp_path / "seg.seg.nrrd"
    write_volume(source, volume)
    finished = _cli("run", str(bundle_forms[form]), str(source), str(output), "--trust", "--device", "cpu")
    assert finished.returncode == 0, finished.stderr
    written = read_volume(output)
    scores = dice_per_label(written.array, truth, LABELS)
    assert min(scores.values()) >= MINIMUM_DICE, (case["name"], scores)
    assert "Segment0_Name:=organ" in output.read_bytes()[:4096].decode("latin-1")


def test_cli_inspect_tells_what_a_bundle_is_and_that_it_runs_code(bundle_forms):
    finished = _cli("inspect", str(bundle_forms["torchscript"]))
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    assert "  form:         TorchScript file with the bundle's configs embedded (ckpt_export)" in lines
    assert "  config:       configs/inference.json" in lines
    assert "  made with:    monai 1.3.0, torch 2.0.0, numpy 1.24.0" in lines
    assert "  runs code:    yes: its configs or code are Python; not trusted yet (you are asked, or pass --trust)" \
        in lines
    assert "  labels:       1=organ, 2=lesion" in lines
    document = json.loads(_cli("inspect", str(bundle_forms["torchscript"]), "--json").stdout)
    assert document["trusted"] is False and document["settings"]["form"] == "torchscript"


def test_cli_refuses_an_untrusted_bundle_and_writes_nothing(tmp_path, held_out):
    source, output = tmp_path / "case.nii.gz", tmp_path / "seg.nii.gz"
    write_volume(source, held_out[0][1])
    finished = _cli("run", str(BUNDLE_FOLDER), str(source), str(output))
    assert finished.returncode == 1
    assert finished.stderr.startswith("error: Phantom organ and lesion bundle is not trusted yet. A bundle package "
                                      "runs code")
    assert "--trust" in finished.stderr and not output.exists()


def test_trust_is_remembered_for_the_exact_content_only(tmp_path, own_bundle, held_out):
    trust_list = TrustList(str(tmp_path / "home"))
    with Runner(device="cpu", trust_list=trust_list) as runner:
        package = open_package(own_bundle)
        with pytest.raises(PackageError, match="not trusted yet"):
            runner.run(package, held_out[0][1])
        trust_list.trust(package)
        runner.run(package, held_out[0][1])
        metadata = own_bundle / "configs" / "metadata.json"
        metadata.write_text(metadata.read_text().replace("For testing", "Changed: for testing"))
        with pytest.raises(PackageError, match="not trusted yet"):
            runner.run(open_package(own_bundle), held_out[0][1])


def test_a_missing_required_package_stops_the_run_with_the_pip_line(runner, own_bundle, held_out):
    metadata_path = own_bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["required_packages_version"] = {"monai-deployer-absent-package": "1.2.3"}
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(PackageError, match=r'monai-deployer-absent-package is not installed '
                                           r'\(pip install "monai-deployer-absent-package>=1\.2\.3"\)'):
        runner.run(open_package(own_bundle), held_out[0][1], trust=True)


def test_bundles_with_their_own_scripts_package_each_get_theirs(runner, tmp_path, held_out):
    """Two bundles both ship ``scripts/``; one worker runs both, each with its own module."""
    volume = Volume(np.ones((8, 8, 8), np.float32))
    for offset in (1, 2):
        folder = tmp_path / f"scripted{offset}"
        (folder / "scripts").mkdir(parents=True)
        (folder / "scripts" / "__init__.py").write_text("")
        (folder / "scripts" / "shift.py").write_text(
            f"def shift(data):\n    data['image'] = data['image'] * 0 + {offset}\n    return data\n")
        _write_identity_bundle(folder, preprocessing_extra=[{"_target_": "Lambda", "func": "$shift"}],
                               imports=["$from scripts.shift import shift"])
        result = runner.run(open_package(folder), volume, trust=True)
        assert np.unique(result.labelmap.array).tolist() == [offset]


@pytest.mark.parametrize(("breakage", "cause"), [
    ("no_inference", r"has no inference config \(configs/inference\.json or inference\.yaml\)"),
    ("broken_json", r"configs/inference\.json is not valid JSON: "),
    ("broken_yaml", r"configs/inference\.yaml is not valid YAML: "),
    ("unbuildable_network", r"the bundle's 'network_def' cannot be built: .*NoSuchNetwork"),
    ("mismatched_weights", r"models/model\.pt does not fit the network_def: \d+ missing keys .*\d+ unexpected"),
    ("pickled_model", r"models/model\.pt holds more than weights .*refused, as loading it would run code"),
    ("raising_preprocessing", r"preprocessing failed \(Lambdad\): .*division by zero"),
])
def test_a_broken_bundle_fails_with_one_line_and_writes_nothing(tmp_path, own_bundle, held_out, breakage, cause):
    _break(own_bundle, breakage)
    source, output = tmp_path / "case.nii.gz", tmp_path / "out.seg.nrrd"
    write_volume(source, held_out[0][1])
    finished = _cli("run", str(own_bundle), str(source), str(output), "--trust", "--device", "cpu")
    assert finished.returncode == 1
    error = finished.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: "), finished.stderr
    assert re.search(cause, error[0]), error[0]
    assert not output.exists() and sorted(path.name for path in tmp_path.iterdir()) == ["PhantomBundle", "case.nii.gz"]


def test_a_zip_that_escapes_its_folder_is_refused_before_anything_is_unpacked(tmp_path, held_out):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        for path in sorted(BUNDLE_FOLDER.rglob("*")):
            if path.is_file():
                writer.write(path, f"PhantomBundle/{path.relative_to(BUNDLE_FOLDER).as_posix()}")
        writer.writestr("PhantomBundle/../../outside.txt", "boom")
    with pytest.raises(PackageError, match=r"escapes its folder \(PhantomBundle/\.\./\.\./outside\.txt\)"):
        open_package(archive)
    assert not (tmp_path.parent / "outside.txt").exists()


def test_a_bundle_given_a_wrong_number_of_channels_says_so(runner, held_out, own_bundle):
    volume = held_out[0][1]
    two_channels = Volume(np.stack([volume.array, volume.array], axis=-1), volume.ijk_to_ras)
    with pytest.raises(InputError, match=r"the bundle takes 1 input channels \(image\); the input has 2"):
        runner.run(open_package(own_bundle), two_channels, trust=True)


def _break(bundle: Path, breakage: str) -> None:
    import torch

    configs = bundle / "configs"
    config = json.loads((configs / "inference.json").read_text())
    if breakage == "no_inference":
        (configs / "inference.json").unlink()
    elif breakage == "broken_json":
        (configs / "inference.json").write_text('{"preprocessing": [}')
    elif breakage == "broken_yaml":
        (configs / "inference.json").unlink()
        (configs / "inference.yaml").write_text("preprocessing:\n  - a\n b: [\n")
    elif breakage == "mismatched_weights":
        torch.save({"conv.weight": torch.zeros(1), "conv.bias": torch.zeros(1)}, bundle / "models" / "model.pt")
    elif breakage == "pickled_model":
        torch.save(torch.nn.Conv3d(1, 3, 1), bundle / "models" / "model.pt")
    elif breakage == "unbuildable_network":
        config["network_def"]["_target_"] = "NoSuchNetwork"
        (configs / "inference.json").write_text(json.dumps(config))
    elif breakage == "raising_preprocessing":
        config["preprocessing"]["transforms"].insert(
            2, {"_target_": "Lambdad", "keys": "@image_key", "func": "$lambda image: image / 0 if 1 / 0 else image"})
        (configs / "inference.json").write_text(json.dumps(config))


def test_labels_come_from_the_config_when_metadata_has_none(runner, tmp_path):
    folder = tmp_path / "labelled"
    _write_identity_bundle(folder, [], [], label_names={"0": "background", "1": "everything"})
    package = open_package(folder)
    assert package.labels == {}
    result = runner.run(package, Volume(np.ones((6, 6, 6), np.float32)), trust=True)
    assert result.labels == {1: "everything"}


def _write_identity_bundle(folder: Path, preprocessing_extra: list, imports: list, **config_entries) -> None:
    """A bundle whose network passes its input through: the label is the preprocessed intensity."""
    import torch

    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    (folder / "configs" / "metadata.json").write_text(json.dumps({"name": folder.name, "version": "0.1"}))
    (folder / "configs" / "inference.json").write_text(json.dumps({
        "imports": imports,
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"}, {"_target_": "EnsureChannelFirstd", "keys": "image"},
            *preprocessing_extra]},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "/nonexistent/never/written"}]},
        **config_entries,
    }))
    torch.jit.script(torch.nn.Identity()).save(str(folder / "models" / "model.ts"))


def _cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "MonaiDeployerLib", *arguments], capture_output=True, text=True,
                          cwd=REPO_ROOT / "MonaiDeployer", timeout=600)
