"""MONAI Bundles as files: a folder, a zip of one, or a TorchScript file with configs embedded by ``ckpt_export``.

Only what can be read without running anything: metadata, which inference config there is, labels
and requirements. A bundle's configs are code (``$`` expressions, ``_target_``): nothing here
evaluates them.
"""

from __future__ import annotations

import json
import os
import posixpath
import zipfile

from .errors import PackageError

INFERENCE_CONFIGS = ("inference.json", "inference.yaml", "inference.yml")
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
            embedded = [name for name in entries if posixpath.dirname(name).endswith("/extra")]
            if embedded:
                folder, form = posixpath.dirname(embedded[0]), "torchscript"
            else:
                folder, form = _configs_folder(path, entries), "zip"
            names = [posixpath.basename(name) for name in entries if posixpath.dirname(name) == folder]
            metadata_entry = posixpath.join(folder, "metadata.json")
            text = archive.read(metadata_entry).decode("utf-8") if metadata_entry in entries else None
    except zipfile.BadZipFile:
        raise PackageError(f"{path} is a corrupt zip file (truncated or damaged)") from None
    return names, text, form


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


def bundle_labels(metadata: dict) -> dict:
    """Label names by output channel from ``network_data_format.outputs.*.channel_def``, background left out."""
    outputs = metadata.get("network_data_format", {}).get("outputs", {})
    channel_def = next(iter(outputs.values()), {}).get("channel_def", {}) if outputs else {}
    labels = {}
    for channel, name in channel_def.items():
        try:
            value = int(channel)
        except ValueError:
            continue
        if str(name).strip().lower() != "background":
            labels[value] = str(name)
    return labels


def bundle_requirements(metadata: dict) -> dict:
    """The versions the bundle was made with, as minimums the worker's environment must meet."""
    requirements = {package: f">={metadata[key]}" for key, package in VERSION_KEYS.items() if metadata.get(key)}
    packages = metadata.get("required_packages_version") or metadata.get("optional_packages_version") or {}
    requirements.update({name: f">={version}" for name, version in packages.items()})
    return requirements


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except OSError as error:
        raise PackageError(f"cannot read {path}: {error.strerror}") from error
