"""The extension's files agree with its CMake lists, its ExtensionsIndex entry and Slicer's conventions.

Slicer's build fails at configure time on a listed file that is missing, and silently leaves out a
file that is not listed (the module then fails to import in the installed extension). Slicer imports
every module file at start-up, so MonaiDeployer.py must not import anything heavy at its top level.
"""

from __future__ import annotations

import ast
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "MonaiDeployer"
MODULE_FILE = MODULE_DIR / "MonaiDeployer.py"
ICON = MODULE_DIR / "Resources" / "Icons" / "MonaiDeployer.png"
RAW_URL_PREFIX = "https://raw.githubusercontent.com/monai-deployer/SlicerMonaiDeployer/main/"

# Modules MonaiDeployer.py may import at its top level: Slicer's own and light standard-library ones, and the
# library's choices (light: see test_the_library_and_its_choices_import_without_numpy).
TOP_LEVEL_IMPORTS_ALLOWED = {"ctk", "qt", "slicer", "vtk", "html", "logging", "os", "re", "shutil", "sys", "time",
                             "typing", "MonaiDeployerLib.choices"}
EXTENSION_FIELDS = ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS")
# Properties of Slicer's slicer-extension-catalog-entry-schema-v1.0.2.json ("additionalProperties": false).
INDEX_SCHEMA_PROPERTIES = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                           "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
INDEX_SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}


def cmake_text(path: Path) -> str:
    """The file without comments."""
    return re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))


def cmake_set(text: str, variable: str) -> list:
    """The values of ``set(variable ...)``, with quotes removed and ${MODULE_NAME} expanded."""
    match = re.search(rf"\bset\(\s*{re.escape(variable)}\b(.*?)\)", text, re.DOTALL)
    assert match, f"no set({variable} ...)"
    values = re.findall(r'"([^"]*)"|(\S+)', match.group(1))
    module_name = re.search(r"\bset\(\s*MODULE_NAME\s+(\S+?)\s*\)", text)
    expanded = []
    for quoted, bare in values:
        value = quoted if quoted or not bare else bare
        if module_name:
            value = value.replace("${MODULE_NAME}", module_name.group(1))
        expanded.append(value)
    return expanded


def module_lists() -> tuple[list, list]:
    text = cmake_text(MODULE_DIR / "CMakeLists.txt")
    return cmake_set(text, "MODULE_PYTHON_SCRIPTS"), cmake_set(text, "MODULE_PYTHON_RESOURCES")


def files_on_disk() -> tuple[set, set]:
    """Python files of the module and files under Resources/, relative to MonaiDeployer/."""
    def keep(path: Path) -> bool:
        relative = path.relative_to(MODULE_DIR)
        return path.is_file() and "__pycache__" not in relative.parts and relative.parts[0] != "Testing"

    scripts = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*.py") if keep(p)}
    resources = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if keep(p)}
    return scripts, resources


def extension_fields() -> dict:
    text = cmake_text(REPO / "CMakeLists.txt")
    fields = {}
    for name, value in re.findall(r'\bset\(\s*EXTENSION_(\w+)\s+("(?:[^"\\]|\\.)*"|[^)\s]*)\s*\)', text):
        fields[name] = value[1:-1] if value.startswith('"') else value
    return fields


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"), filename=str(MODULE_FILE))


def test_every_module_file_is_listed_in_cmake():
    scripts, resources = module_lists()
    on_disk_scripts, on_disk_resources = files_on_disk()
    unlisted_scripts = sorted(on_disk_scripts - set(scripts))
    unlisted_resources = sorted(on_disk_resources - set(resources))
    assert not unlisted_scripts, f"Python files missing from MODULE_PYTHON_SCRIPTS: {unlisted_scripts}"
    assert not unlisted_resources, f"files missing from MODULE_PYTHON_RESOURCES: {unlisted_resources}"


def test_every_file_listed_in_cmake_exists():
    scripts, resources = module_lists()
    assert len(scripts) == len(set(scripts)) and len(resources) == len(set(resources)), "a file is listed twice"
    assert all(name.endswith(".py") for name in scripts), scripts
    missing = [name for name in scripts + resources if not (MODULE_DIR / name).is_file()]
    assert not missing, f"listed in MonaiDeployer/CMakeLists.txt but not on disk: {missing}"


def test_module_cmake_builds_and_registers_the_self_test():
    text = cmake_text(MODULE_DIR / "CMakeLists.txt")
    assert re.search(r"\bset\(\s*MODULE_NAME\s+MonaiDeployer\s*\)", text)
    build = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, re.DOTALL)
    assert build, "no slicerMacroBuildScriptedModule"
    assert "SCRIPTS ${MODULE_PYTHON_SCRIPTS}" in build.group(1)
    assert "RESOURCES ${MODULE_PYTHON_RESOURCES}" in build.group(1)
    testing = re.search(r"if\(\s*BUILD_TESTING\s*\)(.*?)endif\(\)", text, re.DOTALL)
    assert testing, "no if(BUILD_TESTING) block"
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", testing.group(1))
    assert re.search(r"add_subdirectory\(\s*Testing\s*\)", testing.group(1))
    assert re.search(r"add_subdirectory\(\s*Python\s*\)", cmake_text(MODULE_DIR / "Testing" / "CMakeLists.txt"))
    assert (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").is_file()


def test_icon_is_a_128_pixel_square_png():
    data = ICON.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (128, 128)


def test_extension_metadata_is_complete():
    text = cmake_text(REPO / "CMakeLists.txt")
    assert re.search(r"\bproject\(\s*MonaiDeployer\s*\)", text)
    fields = extension_fields()
    empty = [name for name in EXTENSION_FIELDS if not fields.get(name, "").strip()]
    empty += [name for name, value in fields.items() if not value.strip() and name not in empty]
    assert not empty, f"EXTENSION_* fields missing or empty: {empty}"
    assert "PyTorch" in fields["DEPENDS"].split(";") + fields["DEPENDS"].split()
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", fields["DESCRIPTION"].strip()) if s]
    assert 1 <= len(sentences) <= 2, sentences
    for required in (r"find_package\(\s*Slicer\s+REQUIRED\s*\)", r"include\(\s*\$\{Slicer_USE_FILE\}\s*\)",
                     r"add_subdirectory\(\s*MonaiDeployer\s*\)", r"include\(\s*\$\{Slicer_EXTENSION_CPACK\}\s*\)"):
        assert re.search(required, text), required
    assert (REPO / "LICENSE").is_file() and "Apache License" in (REPO / "LICENSE").read_text(encoding="utf-8")


def test_icon_and_screenshot_urls_point_at_files_of_this_repository():
    fields = extension_fields()
    urls = [fields["ICONURL"], *fields["SCREENSHOTURLS"].split()]
    for url in urls:
        assert url.startswith(RAW_URL_PREFIX), url
        assert (REPO / url[len(RAW_URL_PREFIX):]).is_file(), f"{url} names a file that is not in the repository"
    assert REPO / fields["ICONURL"][len(RAW_URL_PREFIX):] == ICON


def test_extensions_index_entry_matches_cmake():
    entry_path = REPO / "MonaiDeployer.json"  # the ExtensionsIndex wants it named after the CMake project
    entry = json.loads(entry_path.read_text(encoding="utf-8"))
    assert set(entry) <= INDEX_SCHEMA_PROPERTIES, set(entry) - INDEX_SCHEMA_PROPERTIES
    assert set(entry) >= INDEX_SCHEMA_REQUIRED
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
                        r"slicer-extension-catalog-entry-schema-v[0-9.]+\.json#?", entry["$schema"])
    fields = extension_fields()
    assert entry["category"] == fields["CATEGORY"]
    assert sorted(entry["build_dependencies"]) == sorted(fields["DEPENDS"].replace(";", " ").split())
    assert entry["scm_url"].removesuffix(".git") == fields["HOMEPAGE"]
    assert entry["scm_url"].removesuffix(".git").rsplit("/", 1)[1].startswith("Slicer")
    assert isinstance(entry.get("tier", 1), int) and 1 <= entry.get("tier", 1) <= 5


def imports_run_at_import_time(tree: ast.Module) -> set:
    """Modules imported when the file is imported: everywhere except inside function bodies."""
    found = set()
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        pending.extend(ast.iter_child_nodes(node))
    return found


def test_module_file_imports_nothing_heavy_at_top_level():
    """Only Slicer's modules, light standard-library ones and the library's choices (the rest of it pulls numpy)."""
    imported = imports_run_at_import_time(module_tree())
    assert {"slicer", "qt", "MonaiDeployerLib.choices"} <= imported, imported
    allowed = [name for name in imported if name in TOP_LEVEL_IMPORTS_ALLOWED or name.split(".")[0] in
               TOP_LEVEL_IMPORTS_ALLOWED - {"MonaiDeployerLib.choices"}]
    assert sorted(set(imported) - set(allowed)) == []


def test_the_library_and_its_choices_import_without_numpy():
    """Slicer imports MonaiDeployer.py at start-up, and with it MonaiDeployerLib.choices: no numpy, torch or MONAI."""
    code = ("import sys, MonaiDeployerLib, MonaiDeployerLib.choices; "
            "print(sorted(name for name in ('numpy', 'torch', 'monai', 'yaml') if name in sys.modules))")
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(MODULE_DIR)})
    assert finished.stdout.strip() == "[]", finished.stdout + finished.stderr


def _translated_calls(tree: ast.Module) -> list:
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_", "translate")]


def test_translatable_strings_are_plain_literals():
    """Qt's lupdate extracts only literal text: no f-strings, no concatenation, no variables inside _()."""
    calls = _translated_calls(module_tree())
    assert calls
    for call in calls:
        texts = call.args if call.func.id == "_" else call.args[1:]
        assert len(texts) == 1 and not call.keywords, ast.unparse(call)
        assert isinstance(texts[0], ast.Constant) and isinstance(texts[0].value, str), ast.unparse(call)
        if call.func.id == "translate":
            assert isinstance(call.args[0], ast.Constant), ast.unparse(call)


def test_module_metadata_and_messages_are_translatable():
    tree = module_tree()
    module_class = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "MonaiDeployer")
    assigned = {}
    for node in ast.walk(module_class):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            assigned[node.targets[0].attr] = node.value

    def translated(value) -> bool:
        return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in ("_", "translate")

    for field in ("title", "helpText", "acknowledgementText"):
        assert translated(assigned[field]), field
    for field in ("categories", "contributors"):
        assert isinstance(assigned[field], ast.List) and all(map(translated, assigned[field].elts)), field

    # Text handed to the user through these calls must come from _() (directly or .format()ted), never a literal.
    user_facing = {"_setStatus", "_reportFailure", "message_html", "confirmOkCancelDisplay", "errorDisplay",
                   "warningDisplay", "infoDisplay", "tryWithErrorDisplay", "getExistingDirectory"}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
        if name not in user_facing:
            continue
        for argument in node.args:
            assert not isinstance(argument, ast.JoinedStr), ast.unparse(node)
            assert not (isinstance(argument, ast.Constant) and isinstance(argument.value, str) and argument.value), \
                ast.unparse(node)


def test_the_panel_takes_its_choices_from_the_library():
    """One list each: the panel's parameter node names the library's choices, and copies none of them."""
    from MonaiDeployerLib.choices import MODE_CHOICES
    from MonaiDeployerLib.packages import MODES

    assert ("auto", *MODES) == MODE_CHOICES
    copied = [node.targets[0].id for node in module_tree().body if isinstance(node, ast.Assign)
              and isinstance(node.targets[0], ast.Name) and node.targets[0].id.endswith("_CHOICES")]
    assert copied == []
    names = {alias.name for node in module_tree().body if isinstance(node, ast.ImportFrom)
             and node.module == "MonaiDeployerLib.choices" for alias in node.names}
    assert {"MODE_CHOICES", "DEVICES", "OUTPUT_KINDS", "LAUNCHES", "APP_INPUT_FORMAT_CHOICES",
            "CONTAINER_RUNTIME_CHOICES"} <= names
