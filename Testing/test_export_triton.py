"""``export-triton``: a standard Triton model repository, served here by the bare ``tritonserver`` binary that
PyTriton's wheel carries (as NVIDIA's Triton container would serve it, with no PyTriton and no ``serve``), and run
through this project's client by name and by package."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from serve_process import start_tritonserver, stop_serve
from test_serve import DEPLOY_APP, LABELS, SAMPLE_BUNDLE, cli_in

from MonaiDeployerLib import InputError, Volume, open_package, read_volume, write_volume
from MonaiDeployerLib.serving import v2
from MonaiDeployerLib.serving.remote import RemoteServer
from MonaiDeployerLib.serving.served import served_name
from MonaiDeployerLib.testing.selftest import MINIMUM_DICE, dice_per_label


@pytest.fixture(scope="module")
def exported(sample_model, tmp_path_factory):
    """The sample TorchScript model, bundle and Deploy app exported into one repository, served by tritonserver;
    then SIGTERM, which must leave no process (the backend stubs and their workers)."""
    folder = tmp_path_factory.mktemp("export")
    written = cli_in(sys.executable, "export-triton", sample_model, SAMPLE_BUNDLE, DEPLOY_APP, folder / "models",
                     "--model", sample_model, "--trust", "--python", sys.executable, "--device", "cpu")
    assert written.returncode == 0, written.stderr
    served = start_tritonserver(folder / "models", folder, folder / "tritonserver.log")
    try:
        yield served, folder / "models", written.stdout
    finally:
        left = stop_serve(served)
    assert not left, left


def test_the_repository_holds_one_standard_model_per_package_named_as_serve_names_it(exported, sample_model):
    _served, repository, printed = exported
    packages = [open_package(sample_model), open_package(SAMPLE_BUNDLE), open_package(DEPLOY_APP, model=sample_model)]
    names = [served_name(package) for package in packages]
    assert printed.splitlines()[:3] == [f"wrote {repository / name}" for name in names]
    assert sorted(path.name for path in repository.iterdir()) == sorted([*names, v2.CATALOGUE])
    for name, package in zip(names, packages, strict=True):
        config = (repository / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in config and 'backend: "python"' in config
        assert f'parameters: {{ key: "mode" value: {{ string_value: "{package.mode}" }} }}' in config
        assert (repository / name / "1" / "model.py").is_file()
        assert (repository / name / "1" / "MonaiDeployerLib" / "serving" / "python_backend.py").is_file()
        assert json.loads((repository / name / "card.json").read_text())["labels"] == {"1": "organ", "2": "lesion"}


def test_held_out_phantoms_through_the_exported_repository_reach_the_dice_target(exported, sample_model, held_out,
                                                                                tmp_path):
    served, _repository, _printed = exported
    remote = RemoteServer(served.url)
    models = {entry["mode"]: entry["model"] for entry in remote.models()}
    assert sorted(models) == ["bundle", "deploy", "torchscript"]
    assert remote.find(sample_model) == models["torchscript"]  # matched by content: the copy is the same package
    for case, volume, truth in held_out:
        source = write_volume(tmp_path / f"{case['name']}.nii.gz", volume)
        by_cli = cli_in(sys.executable, "run", models["torchscript"], source, tmp_path / "out.seg.nrrd", "--server",
                        served.url)
        assert by_cli.returncode == 0, by_cli.stderr
        results = [read_volume(tmp_path / "out.seg.nrrd")]
        results += [remote.run(models[mode], volume).labelmap for mode in ("bundle", "deploy")]
        for mode, result in zip(("torchscript", "bundle", "deploy"), results, strict=True):
            assert result.same_grid(volume, tolerance=1e-6), (mode, case["name"])
            scores = dice_per_label(result.array, truth, LABELS)
            assert min(scores.values()) >= MINIMUM_DICE, (mode, case["name"], scores)


def test_an_exported_models_errors_reach_the_client_as_one_line(exported):
    served, _repository, _printed = exported
    remote = RemoteServer(served.url)
    model = next(entry["model"] for entry in remote.models() if entry["mode"] == "torchscript")
    with pytest.raises(InputError) as refused:
        remote.run(model, Volume(np.zeros((16, 16, 16, 2), np.float32)))
    assert str(refused.value) == "the model takes 1 input channels; the input has 2"
