"""``zoo list`` and ``zoo download``, and the download bar every command shows for a ``zoo:`` package."""

from __future__ import annotations

import contextlib
import json
import sys

from ..packages import open_package
from .catalogue import read_catalogue
from .download import download
from .listing import listed, size_text, source_line
from .reference import is_zoo_reference, resolve


def zoo_list_command(arguments) -> int:
    catalogue = read_catalogue(arguments.index)
    bundles = listed(catalogue)
    if arguments.json:
        print(json.dumps({"index": catalogue.url, "fetched": catalogue.fetched,
                          "offline_reason": catalogue.offline_reason,
                          "bundles": [bundle.to_dict() for bundle in bundles]}, indent=2))
        return 0
    print(source_line(catalogue))
    for bundle in bundles:
        cached = f", downloaded: {', '.join(bundle.cached)}" if bundle.cached else ""
        print(f"{bundle.name} {bundle.newest} ({len(bundle.versions)} versions{cached})"
              + (f"\n  {bundle.description}" if bundle.description else ""))
    if not bundles:
        print("the index lists no bundle")
    return 0


def zoo_download_command(arguments) -> int:
    """The bundle's folder on stdout; its licence, and the progress, on stderr."""
    catalogue = read_catalogue(arguments.index)
    if catalogue.offline_reason:
        print(f"note: {source_line(catalogue)}", file=sys.stderr)
    with download_bar() as progress:
        folder = download(catalogue.archive(arguments.name, arguments.version), progress)
    licence = open_package(folder).settings.licence
    print(f"licence: {licence or 'the bundle states none'}", file=sys.stderr)
    print(folder)
    return 0


def resolve_zoo_arguments(arguments) -> None:
    """The ``zoo:`` references among a command's packages as their cached folders, downloaded with a bar."""
    index = getattr(arguments, "index", None)
    for attribute in ("package", "packages"):
        value = getattr(arguments, attribute, None)
        if isinstance(value, list):
            setattr(arguments, attribute, [_resolved(item, index) for item in value])
        elif value is not None:
            setattr(arguments, attribute, _resolved(value, index))


def _resolved(location: str, index: str | None) -> str:
    if not is_zoo_reference(location):
        return location
    with download_bar() as progress:
        return resolve(location, index, progress)


@contextlib.contextmanager
def download_bar():
    """A ``download`` progress callback: tqdm's bar (bytes, rate) on a terminal; elsewhere (a log) one line when the
    download is whole."""
    bar, last = None, None

    def progress(done: int, total: int | None, rate: float) -> None:
        nonlocal bar, last
        last = done, rate
        if bar is None and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                       desc="downloading", dynamic_ncols=True)
        if bar is not None:
            bar.update(done - bar.n)

    try:
        yield progress
    except BaseException:
        last = None
        raise
    finally:
        if bar is not None:
            bar.close()
        elif last is not None:
            print(f"downloaded {size_text(last[0])} at {size_text(last[1])}/s", file=sys.stderr)

