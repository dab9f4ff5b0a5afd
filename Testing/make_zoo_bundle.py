"""A runnable copy of a Model Zoo bundle from ../shared/model-zoo or Testing/data/model-zoo: its real configs,
weights made here.

    python Testing/make_zoo_bundle.py NAME TARGET_FOLDER

The configs are copied unmodified. The weights are the bundle's own ``network_def`` initialised with
a fixed seed and saved as ``models/model.pt`` (a state dict); for DiNTS, the architecture
checkpoint (``models/search_code_18590.pt``) is what a DiNTS search saves: numpy arrays of a
decoded search space. Run it with the Python the bundle will run in: ``network_def`` must be
buildable there (SwinUNETR's ``img_size`` argument, for one, is gone after MONAI 1.4).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_ZOO = REPO_ROOT.parent / "shared" / "model-zoo"
COPIED_ZOO = REPO_ROOT / "Testing" / "data" / "model-zoo"  # bundles' configs kept with the tests (data/SOURCES.md)
SEED = 20261125


def make_zoo_bundle(name: str, target: Path, python: str = sys.executable) -> Path:
    """Copy the configs and make the weights in ``python`` (a subprocess, so any MONAI release works)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(zoo_configs(name), target / "configs")
    (target / "models").mkdir()
    subprocess.run([python, __file__, name, str(target)], check=True, capture_output=True, text=True)
    return target


def zoo_configs(name: str) -> Path:
    """The ``configs`` folder of a Model Zoo bundle, in ../shared/model-zoo or else in Testing/data/model-zoo."""
    return next((folder / name / "configs" for folder in (MODEL_ZOO, COPIED_ZOO) if (folder / name).is_dir()),
                COPIED_ZOO / name / "configs")


def write_weights(target: Path) -> None:
    import torch
    from monai.bundle import ConfigParser

    torch.manual_seed(SEED)
    config = next(path for path in (target / "configs").iterdir() if path.stem == "inference")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(target)
    parser["device"] = "$torch.device('cpu')"
    if "arch_ckpt_path" in parser:
        torch.save(dints_search_code(), target / "models" / "search_code_18590.pt")
        parser["arch_ckpt"] = "$torch.load(@arch_ckpt_path, map_location='cpu', weights_only=False)"
        parser["dints_space#device"] = "$torch.device('cpu')"
    network = parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), target / "models" / "model.pt")


def dints_search_code() -> dict:
    """The architecture a DiNTS search of the bundle's space could have found (numpy arrays, as it saves them)."""
    from monai.networks.nets import TopologySearch

    space = TopologySearch(channel_mul=1, num_blocks=12, num_depths=4, use_downsample=True, device="cpu")
    node_a, arch_code_a, arch_code_c, _ = space.decode()
    return {"node_a": node_a, "arch_code_a": arch_code_a, "arch_code_c": arch_code_c}


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    write_weights(Path(sys.argv[2]))
