"""The panel's info card: what a package says about itself and whether the worker can run it, as HTML.

``describe`` does the slow part (opening the package, starting the worker, inspecting a MAP image), so the panel
calls it off the GUI thread and shows the card when it is ready.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass

from .errors import MonaiDeployerError, NotAMapError
from .packages import PackageInfo, normalise_name, package_facts
from .preflight import Choice


@dataclass
class Card:
    """The card's HTML, and the package when the choice named a usable one."""

    html: str
    package: PackageInfo | None = None


def describe(choice: Choice, runner_for: Callable, is_trusted: Callable[[PackageInfo], bool],
             tr: Callable[[str], str] = str) -> Card:
    """The card for ``choice``; problems go in the card (a path being typed is often not valid yet), never raised."""
    try:
        package = choice.open()
    except MonaiDeployerError as error:
        return Card(message_html(tr("This is not a usable model package."), str(error)))
    if package.mode == "map":
        return Card(_map_html(package, choice.device, tr), package)
    environment, problems, worker_error = None, [], None
    try:
        runner = runner_for(choice.worker_python.strip(), choice.device)
        environment = runner.environment()
        problems = runner.check_requirements(package)
    except MonaiDeployerError as error:
        worker_error = str(error)
    return Card(package_html(package, environment, problems, worker_error, is_trusted(package), tr), package)


def _map_html(package: PackageInfo, device: str, tr) -> str:
    """A MAP's manifests, resources and CUDA verdict, read from the image before any run."""
    from .containers import find_runtime
    from .maps import describe_map, inspect_map

    try:
        facts = inspect_map(find_runtime(package.settings.get("runtime")), package.path,
                            entry_point=package.settings.get("entry_point", False))
    except NotAMapError as error:
        return message_html(tr("This image is not a MONAI Application Package."),
                            str(error) + " " + tr("Apply asks whether to run its entry point anyway."))
    except MonaiDeployerError as error:
        return message_html(tr("This image cannot be run."), str(error))
    title = f"{facts.title} {facts.version}".strip()
    return facts_html(title, describe_map(facts, facts.verdict(gpu_requested=device != "cpu")))


def message_html(title: str, detail: str) -> str:
    return f"<p><b>{html.escape(title)}</b></p><p>{html.escape(detail)}</p>"


def fact_rows(facts: list) -> str:
    """(heading, text) pairs as lines of the card."""
    return "".join(f"<br><b>{html.escape(heading.capitalize())}:</b> {html.escape(text)}" for heading, text in facts)


def facts_html(title: str, facts: list) -> str:
    return f"<h3>{html.escape(title)}</h3><p>{fact_rows(facts)}</p>"


def package_html(package: PackageInfo, environment: dict | None, problems: list, worker_error: str | None,
                 trusted: bool, tr: Callable[[str], str] = str) -> str:
    """The card of a package run in the worker: its facts, labels, and its requirements against the worker's."""
    e = html.escape
    parts = [f"<h3>{e(package.name)} <small>{e(package.version)}</small></h3>"]
    if package.description:
        parts.append(f"<p>{e(package.description)}</p>")
    facts = fact_rows(package_facts(package, trusted))
    parts.append("<p><b>{}</b> {}<br><b>{}</b> {}{}</p>".format(
        e(tr("Mode:")), e(package.mode), e(tr("Package:")), e(package.path), facts))
    if package.labels:
        parts.append(_labels_html(package, tr))
    if worker_error is not None:
        parts.append("<p><b>{}</b> {}</p>".format(e(tr("Worker:")), e(tr("cannot start: {error}").format(
            error=worker_error))))
        return "".join(parts)
    parts.append("<p><b>{}</b> {}</p>".format(e(tr("Worker:")), e(tr("Python {version} ({path})").format(
        version=environment.get("python", "?"), path=environment.get("executable", "?")))))
    if package.requirements:
        parts.append(_requirements_html(package, environment["packages"], problems, tr))
    if problems:
        items = "".join(f"<li>{e(problem)}</li>" for problem in problems)
        parts.append(f"<ul style='color:red'>{items}</ul>")
    return "".join(parts)


def _labels_html(package: PackageInfo, tr) -> str:
    rows = []
    for value, name in sorted(package.labels.items()):
        r, g, b = package.colors.get(value, (0.5, 0.5, 0.5))
        swatch = f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}"
        rows.append(f'<tr><td style="background-color:{swatch}">&nbsp;&nbsp;&nbsp;</td>'
                    f"<td>{value}</td><td>{html.escape(name)}</td></tr>")
    return "<p><b>{}</b></p><table cellspacing='2'>{}</table>".format(html.escape(tr("Labels:")), "".join(rows))


def _requirements_html(package: PackageInfo, installed: dict, problems: list, tr) -> str:
    e = html.escape
    rows = []
    for name, specifier in sorted(package.requirements.items()):
        version = installed.get(normalise_name(name))
        mentioned = any(re.search(rf"\b{re.escape(name)}\b", problem, re.IGNORECASE) for problem in problems)
        ok = version is not None and not mentioned
        state = tr("OK") if ok else (tr("missing") if version is None else tr("wrong version"))
        colour = "green" if ok else "red"
        found = version if version is not None else "-"
        rows.append(f"<tr><td style='color:{colour}'>{e(state)}</td><td>{e(name)}{e(specifier)}</td>"
                    f"<td>{e(found)}</td></tr>")
    return "<p><b>{}</b></p><table cellspacing='4'>{}</table>".format(e(tr("Requirements:")), "".join(rows))
