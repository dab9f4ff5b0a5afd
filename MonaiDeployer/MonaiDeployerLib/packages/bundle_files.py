"""MONAI Bundles as files: a folder, a zip of one, or a TorchScript file with configs embedded by ``ckpt_export``.

Only what can be read without running anything: metadata, which inference config there is, labels
and requirements (the metadata's, and the packages MONAI imports for the transforms its inference
config names). A bundle's configs are code (``$`` expressions, ``_target_``): nothing here
evaluates them.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
import zipfile

from ..environment import optional_packages
from ..errors import PackageError

INFERENCE_CONFIGS = ("inference.json", "inference.yaml", "inference.yml")
# Where Model Zoo bundles keep their licences: the code's at the top, the data's (which may forbid commercial use of
# the weights trained on it) in docs/.
LICENCE_FILES = ("LICENSE", "LICENSE.txt", "license.txt", "docs/data_license.txt")
NON_COMMERCIAL = ("non-commercial", "noncommercial", "by-nc", "non commercial")
LICENCE_READ = 1 << 16  # characters of a licence file read (its restrictions are stated early)
VERSION_KEYS = {"monai_version": "monai", "pytorch_version": "torch", "numpy_version": "numpy"}


def read_bundle_metadata(path: str) -> tuple[dict, str, str]:
    """(metadata, name of the inference config or "", form: "folder" | "zip" | "torchscript")."""
    if os.path.isdir(path):
        configs = os.path.join(path, "configs")
        names = os.listdir(configs) if os.path.isdir(configs) else []
        metadata_text = _read_text(os.path.join(configs, "metadata.json")) if "metadata.json" in names else None
        form = "folder"
    else:
        names, metadata_text, form = _read_archive(path)
    if metadata_text is None:
        raise PackageError(f"{path} is not a usable MONAI Bundle: it has no configs/metadata.json")
    try:
        metadata = json.loads(metadata_text)
    except json.JSONDecodeError as error:
        raise PackageError(f"{path}: metadata.json is not valid JSON: {error.msg} at line {error.lineno}") from None
    if not isinstance(metadata, dict):
        raise PackageError(f"{path}: metadata.json must hold a JSON object")
    inference = next((name for name in INFERENCE_CONFIGS if name in names), "")
    return metadata, inference, form


def _read_archive(path: str) -> tuple[list, str | None, str]:
    """Config names and metadata text of a bundle zip or of a TorchScript file's ``extra/`` files."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.namelist()
            check_entries_stay_inside(path, entries)
            folder, form = _archive_configs(path, entries)
            names = [posixpath.basename(name) for name in entries if posixpath.dirname(name) == folder]
            metadata_entry = posixpath.join(folder, "metadata.json")
            text = archive.read(metadata_entry).decode("utf-8") if metadata_entry in entries else None
    except zipfile.BadZipFile:
        raise PackageError(f"{path} is a corrupt zip file (truncated or damaged)") from None
    return names, text, form


def _archive_configs(path: str, entries: list) -> tuple[str, str]:
    """The folder of an archive's configs, and its form: a TorchScript file's ``extra/`` or a zip's ``configs/``."""
    embedded = [name for name in entries if posixpath.dirname(name).endswith("/extra")]
    if embedded:
        return posixpath.dirname(embedded[0]), "torchscript"
    return _configs_folder(path, entries), "zip"


def check_entries_stay_inside(path: str, entries: list) -> None:
    """Refuse an archive with an entry that would land outside its folder when extracted."""
    for name in entries:
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise PackageError(f"{path} has an entry that escapes its folder ({name}); refusing the archive")


def _configs_folder(path: str, entries: list) -> str:
    folders = {posixpath.dirname(name) for name in entries if posixpath.basename(posixpath.dirname(name)) == "configs"}
    folders = {folder for folder in folders if folder.count("/") <= 1}  # configs/ or Name/configs/
    if len(folders) != 1:
        raise PackageError(f"{path} is not a usable MONAI Bundle zip: expected one configs/ folder at its top, "
                           f"found {len(folders)}")
    return folders.pop()


def _first_format(metadata: dict, side: str) -> dict:
    formats = metadata.get("network_data_format", {}).get(side, {})
    first = next(iter(formats.values()), {}) if isinstance(formats, dict) and formats else {}
    return first if isinstance(first, dict) else {}


def _channel_names(definition: dict) -> dict:
    names = {}
    for channel, name in (definition.get("channel_def") or {}).items():
        try:
            names[int(channel)] = str(name)
        except ValueError:
            continue
    return names


def outputs_overlap(metadata: dict) -> bool:
    """Several output channels and none of them background: independent (sigmoid) masks that may overlap."""
    names = _channel_names(_first_format(metadata, "outputs"))
    return len(names) > 1 and not any(name.strip().lower() == "background" for name in names.values())


def bundle_labels(metadata: dict) -> dict:
    """Label names from ``network_data_format.outputs.*.channel_def``, background left out.

    Exclusive outputs keep their channel numbers as label values; overlapping outputs are numbered
    from 1 (channel 0 is segment 1), as each becomes a segment of its own.
    """
    names = _channel_names(_first_format(metadata, "outputs"))
    if outputs_overlap(metadata):
        return {channel + 1: name for channel, name in sorted(names.items())}
    return {value: name for value, name in names.items() if name.strip().lower() != "background"}


def bundle_inputs(metadata: dict) -> dict:
    """How many input channels the network takes, and their names (e.g. T1c, T1, T2, FLAIR)."""
    first = _first_format(metadata, "inputs")
    names = [name for _, name in sorted(_channel_names(first).items())]
    count = first.get("num_channels")
    return {"channels": count if isinstance(count, int) else len(names) or 1, "channel_names": names}


def made_with(metadata: dict) -> dict:
    """The monai, torch and numpy versions the bundle's author used, as its metadata records them."""
    return {package: str(metadata[key]) for key, package in VERSION_KEYS.items() if metadata.get(key)}


def bundle_licence(path: str, metadata: dict) -> str:
    """The licences a bundle states, as one line: its metadata's ``license``, then the first line of each licence
    file of a bundle folder; marked where any of them restricts it to non-commercial use. "" when it states none."""
    parts, texts = [], []
    stated = metadata.get("license")
    if isinstance(stated, str) and stated.strip():
        parts.append(" ".join(stated.split()))
        texts.append(stated)
    for name in LICENCE_FILES if os.path.isdir(path) else ():
        try:
            with open(os.path.join(path, *name.split("/")), encoding="utf-8", errors="replace") as stream:
                text = stream.read(LICENCE_READ)
        except OSError:  # absent
            continue
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if first:
            parts.append(f"{name}: {first[:100]}")
            texts.append(text)
    licence = "; ".join(parts)
    if any(marker in text.lower() for text in texts for marker in NON_COMMERCIAL):
        licence = f"for non-commercial use only ({licence})"
    return licence


def bundle_requirements(metadata: dict) -> dict:
    """The versions the bundle was made with, as minimums the worker's environment must meet."""
    requirements = {package: f">={metadata[key]}" for key, package in VERSION_KEYS.items() if metadata.get(key)}
    packages = metadata.get("required_packages_version") or metadata.get("optional_packages_version") or {}
    requirements.update({name: f">={version}" for name, version in packages.items()})
    return requirements


def undeclared_needs(path: str, inference: str, requirements: dict) -> dict:
    """The packages the inference config's MONAI transforms and networks import when they run (scikit-image for
    KeepLargestConnectedComponentd...) that ``requirements`` lacks, each with what needs it: {pip name: [names]}."""
    from ..environment.requirements import normalise_name

    declared = {normalise_name(name) for name in requirements}
    needs = optional_packages.config_needs(read_inference_config(path, inference)) if inference else {}
    return {name: users for name, users in needs.items() if normalise_name(name) not in declared}


def read_inference_config(path: str, name: str) -> dict:
    """A bundle's ``configs/<name>`` as data, nothing evaluated; {} when it cannot be read (the run says why).

    YAML needs PyYAML, which a worker has (MONAI reads YAML configs with it) but a bare Python may not.
    """
    try:
        if os.path.isdir(path):
            text = _read_text(os.path.join(path, "configs", name))
        else:
            with zipfile.ZipFile(path) as archive:
                folder, _ = _archive_configs(path, archive.namelist())
                text = archive.read(posixpath.join(folder, name)).decode("utf-8")
        if name.endswith(".json"):
            config = json.loads(text)
        else:
            import yaml

            config = yaml.safe_load(text)
    except Exception:  # unreadable, not JSON or YAML, or no PyYAML: nothing shown before the run
        return {}
    return config if isinstance(config, dict) else {}


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except OSError as error:
        raise PackageError(f"cannot read {path}: {error.strerror}") from error


def unpacked_root(path: str, form: str, content_hash: str, cache_folder: str) -> str:
    """A folder holding the bundle (``configs/``...): the folder itself, or its zip unpacked once into the cache.

    A TorchScript file's embedded ``extra/`` files become ``configs/``; its network is the file itself.
    """
    if form == "folder":
        return path
    target = os.path.join(cache_folder, content_hash[:24])
    if os.path.isdir(target):
        return target
    os.makedirs(cache_folder, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=".partial-", dir=cache_folder)
    try:
        extract_bundle_archive(path, form, partial)
        os.replace(partial, target)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not os.path.isdir(target):  # another worker may have unpacked the same bundle first
            raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


def extract_bundle_archive(path: str, form: str, target: str) -> None:
    """Extract a bundle zip's root (``form`` "zip") or a TorchScript file's embedded configs (``form`` "torchscript")
    into the existing folder ``target``; an entry that would land outside it refuses the whole archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            check_entries_stay_inside(path, archive.namelist())
            if form == "torchscript":
                _unpack_embedded_configs(archive, target)
            else:
                _unpack_bundle_folder(path, archive, target)
    except zipfile.BadZipFile:
        raise PackageError(f"{path} is a corrupt zip file (truncated or damaged)") from None


def _unpack_embedded_configs(archive: zipfile.ZipFile, target: str) -> None:
    configs = os.path.join(target, "configs")
    os.makedirs(configs)
    for name in archive.namelist():
        if posixpath.dirname(name).endswith("/extra") and posixpath.basename(name):
            with open(os.path.join(configs, posixpath.basename(name)), "wb") as stream:
                stream.write(archive.read(name))


def _unpack_bundle_folder(path: str, archive: zipfile.ZipFile, target: str) -> None:
    """Extract the folder that holds ``configs/`` (``Name/`` or the zip's top) as the bundle root."""
    top = posixpath.dirname(_configs_folder(path, archive.namelist()))
    prefix = f"{top}/" if top else ""
    for name in archive.namelist():
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        destination = os.path.join(target, *name[len(prefix):].split("/"))
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with archive.open(name) as source, open(destination, "wb") as stream:
            shutil.copyfileobj(source, stream)
