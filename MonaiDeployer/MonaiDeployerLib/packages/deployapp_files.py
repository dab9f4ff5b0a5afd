"""MONAI Deploy App SDK applications as files: the app, its model, its ``app.yaml`` and ``requirements.txt``.

Only what can be read without running anything. An app is a ``.py`` file, or a folder with
``app.py`` or ``__main__.py``; it runs as ``python app.py -i INPUT -o OUTPUT -m MODEL``. Its model
is a file or folder inside the package (``models/``, ``model/``, or one ``.ts``/``.pt``/``.pth``/
``.zip`` file), or one the user names.
"""

from __future__ import annotations

import ast
import os
import re

from ..errors import PackageError

APP_FILES = ("app.py", "__main__.py")
MODEL_FOLDERS = ("models", "model")
MODEL_SUFFIXES = (".ts", ".pt", ".pth", ".zip")
DICOM_MARKERS = ("DICOMDataLoaderOperator", "DICOMSeriesSelectorOperator", "DICOMSeriesToVolumeOperator")


def app_file(path: str) -> str:
    """The file that ``python FILE -i ... -o ... -m ...`` runs."""
    if os.path.isfile(path):
        return path
    for name in APP_FILES:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise PackageError(f"{path} is not a MONAI Deploy app: it has no app.py or __main__.py")


def warm_obstacle(app_path: str) -> str | None:
    """Why the app cannot be kept warm, read from its source without running it; None when it can.

    Warm, the worker imports the app and re-runs its one ``Application`` subclass. A plain script
    (numpy, another framework) would run at import, with the worker's arguments: it runs cold instead.
    """
    try:
        with open(app_path, encoding="utf-8") as stream:
            tree = ast.parse(stream.read(), app_path)
    except (OSError, SyntaxError, ValueError) as error:
        return f"{os.path.basename(app_path)} cannot be read as Python ({error})"
    if not any(isinstance(node, ast.ClassDef) and any(_base_name(base) == "Application" for base in node.bases)
               for node in tree.body):
        return f"{os.path.basename(app_path)} defines no MONAI Deploy Application class"
    return None


def _base_name(base: ast.expr) -> str:
    return base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")


def find_model(path: str, chosen: str | None) -> str:
    """The model the app gets with ``-m``: the user's choice, else the one file or folder the package holds."""
    if chosen:
        if not os.path.exists(chosen):
            raise PackageError(f"model not found: {chosen}")
        return os.path.abspath(chosen)
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    for name in MODEL_FOLDERS:
        candidate = os.path.join(folder, name)
        if os.path.isdir(candidate):
            return candidate
    files = sorted(name for name in os.listdir(folder) if name.lower().endswith(MODEL_SUFFIXES))
    if len(files) == 1:
        return os.path.join(folder, files[0])
    found = f"{len(files)} model files ({', '.join(files)})" if files else "no models/ folder and no model file"
    raise PackageError(f"{path}: {found}; choose the model the app takes with -m (--model, or model= in the API)")


def read_app_yaml(path: str) -> dict:
    """``app.yaml`` beside the app (the SDK packager's description), or {}."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    yaml_path = os.path.join(folder, "app.yaml")
    if not os.path.isfile(yaml_path):
        return {}
    import yaml

    try:
        with open(yaml_path, encoding="utf-8") as stream:
            document = yaml.safe_load(stream) or {}
    except yaml.YAMLError as error:
        raise PackageError(f"{yaml_path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(document, dict):
        raise PackageError(f"{yaml_path} must hold a mapping")
    return document


def read_requirements(path: str) -> dict:
    """``requirements.txt`` beside the app as {name: specifier}; lines pip alone understands are left out."""
    from packaging.requirements import InvalidRequirement, Requirement

    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    requirements_path = os.path.join(folder, "requirements.txt")
    if not os.path.isfile(requirements_path):
        return {}
    requirements = {}
    with open(requirements_path, encoding="utf-8") as stream:
        for line in stream:
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-"):
                continue
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                raise PackageError(f"{requirements_path}: cannot read the requirement {line!r}") from None
            requirements[requirement.name] = str(requirement.specifier)
    return requirements


def input_format(app_path: str, app_yaml: dict) -> str:
    """"dicom" when the app reads DICOM (``app.yaml``'s input formats, or the SDK's DICOM operators), else "nifti"."""
    application = app_yaml.get("application", {}) if isinstance(app_yaml.get("application"), dict) else {}
    declared = " ".join(str(entry) for entry in application.get("inputFormats") or []).lower()
    if "dicom" in declared:
        return "dicom"
    if "nifti" in declared or "nii" in declared:
        return "nifti"
    with open(app_path, encoding="utf-8", errors="replace") as stream:
        source = stream.read()
    return "dicom" if any(re.search(rf"\b{marker}\b", source) for marker in DICOM_MARKERS) else "nifti"


def declared_labels(app_yaml: dict) -> dict:
    """Label names an app declares under ``labels:`` in its ``app.yaml`` ({value: name}), background left out."""
    labels = {}
    for value, name in (app_yaml.get("labels") or {}).items():
        if str(value).isdigit() and int(value) > 0:
            labels[int(value)] = str(name)
    return labels
