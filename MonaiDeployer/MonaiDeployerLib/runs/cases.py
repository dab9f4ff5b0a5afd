"""The cases of a batch, from what the user names: volume files, folders of them (searched recursively, in a stable
order), folders of DICOM files (one case per image series) and volumes already in memory.

Each case knows where its output goes (``output_stem``: a path relative to the output folder, without suffix):
a file's name without its suffix, under the sub-folders it was found in; a DICOM series' patient, study and
series. Two cases that would write the same output are refused before anything runs.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass

from ..errors import InputError
from ..imageio import dicom_cases
from ..imageio.volume import Volume, read_volume, volume_suffix
from .leftovers import PARTIAL_PREFIX


@dataclass(frozen=True, eq=False)
class Case:
    """One input of a batch; ``read()`` gives its volume (in a reading thread: it holds no lock of its own).

    ``dicom_files``: the series a DICOM case was read from (a Deploy app that reads DICOM gets these originals,
    and a DICOM SEG output references them). ``problem``: why a file found cannot be a case (its reading fails
    with it, so the case fails alone).
    """

    name: str
    output_stem: str
    path: str | None = None
    dicom_files: tuple = ()
    volume: Volume | None = None
    problem: str = ""

    def for_reader(self) -> Case:
        """What a reader thread may read: the case itself (a file, a series, a volume in memory); a case that must be
        read in the caller's thread (a scene node) returns a copy in memory instead."""
        return self

    def read(self) -> Volume:
        if self.problem:
            raise InputError(self.problem)
        if self.volume is not None:
            return self.volume
        if self.dicom_files:
            return dicom_cases.read_series(self.dicom_files)
        return read_volume(self.path)


def find_cases(inputs, outside: str | None = None) -> list:
    """The cases named by ``inputs`` (paths, ``Volume``s or ``Case``s), in order; a path that does not exist, or a
    folder with no volume in it, is refused at once. ``outside``: a folder the search of folders leaves out (the
    output folder: earlier results are not inputs)."""
    cases = []
    skipped = os.path.abspath(outside) if outside else None
    for number, item in enumerate(inputs, start=1):
        if isinstance(item, Case):
            cases.append(item)
        elif isinstance(item, Volume):
            cases.append(Case(f"volume {number}", f"volume-{number}", volume=item))
        else:
            cases.extend(_cases_at(os.fspath(item), skipped))
    _check_outputs_differ(cases)
    return cases


def _cases_at(path: str, skipped: str | None) -> list:
    if os.path.isdir(path):
        found = _cases_in_folder(path, skipped)
        if not found:
            raise InputError(f"no volume file or DICOM series in the folder {path}")
        return found
    if not os.path.exists(path):
        raise InputError(f"input not found: {path}")
    suffix = volume_suffix(path)
    if not suffix:
        raise InputError(f"not a volume file or a folder: {path} (use .nrrd, .nii, .nii.gz or a folder of them or of "
                         "DICOM files)")
    return [Case(path, os.path.basename(path)[:-len(suffix)], path=path)]


def _cases_in_folder(folder: str, skipped: str | None) -> list:
    """Volume files by their path, then the DICOM series by their first file, then DICOM files that cannot be read
    (each a case that fails): the same order every time."""
    volumes, dicom_files = [], []
    for parent, subfolders, files in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith(".")
                               and os.path.abspath(os.path.join(parent, name)) != skipped)
        for name in sorted(files):
            path = os.path.join(parent, name)
            if name.startswith((".", PARTIAL_PREFIX)):
                continue
            if volume_suffix(name):
                volumes.append(path)
            elif dicom_cases.is_dicom_file(path):
                dicom_files.append(path)
    cases = [Case(path, os.path.relpath(path, folder)[:-len(volume_suffix(path))], path=path) for path in volumes]
    found, unreadable = dicom_cases.find_series(dicom_files)
    named = collections.Counter(series.name for series in found)
    for series in found:
        where = os.path.dirname(series.files[0])
        unique = series.name if named[series.name] == 1 else \
            f"{series.name}_{dicom_cases.safe_name(series.uid[-12:])}"
        cases.append(Case(f"{where}: DICOM series {series.series} of {series.patient}", unique, path=where,
                          dicom_files=series.files))
    cases.extend(Case(path, os.path.relpath(path, folder), path=path, problem=problem)
                 for path, problem in unreadable.items())
    return cases


def _check_outputs_differ(cases: list) -> None:
    seen = {}
    for case in cases:
        key = os.path.normcase(case.output_stem)
        if key in seen:
            raise InputError(f"{seen[key].name} and {case.name} would write the same output {case.output_stem}: "
                             "give them in separate folders or batches")
        seen[key] = case
