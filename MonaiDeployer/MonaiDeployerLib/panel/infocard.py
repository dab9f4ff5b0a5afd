"""The panel's info card: what a package says about itself and whether the worker can run it, as HTML.

``describe`` does the slow part (opening the package, starting the worker, inspecting a MAP image), so the panel
calls it off the GUI thread; ``Card.html`` renders it on the GUI thread, where translations are looked up.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..environment.requirements import normalise_name
from ..errors import MonaiDeployerError, NotAMapError
from ..packages import PackageInfo, package_facts
from .preflight import Choice


@dataclass
class Card:
    """What the card shows, gathered off the GUI thread; ``html(tr)`` renders it (translated on the GUI thread)."""

    choice: Choice
    package: PackageInfo | None = None
    error: str | None = None  # why the choice is not a usable package
    environment: dict | None = None
    problems: list = field(default_factory=list)
    worker_error: str | None = None
    trusted: bool = False
    map_title: str = ""
    map_facts: list | None = None
    not_a_map: str | None = None  # why an image is not a MAP
    map_error: str | None = None  # why an image cannot be run
    served: object = None  # the served model chosen (serving.remote.ServedModel), on a server
    served_models: list | None = None  # every model the server serves (its cards), on a server

    def html(self, tr: Callable[[str], str] = str) -> str:
        if self.choice.server_url:
            return self._served_html(tr)
        if self.package is None:
            return message_html(tr("This is not a usable model package."), self.error or "")
        if self.not_a_map is not None:
            return message_html(tr("This image is not a MONAI Application Package."),
                                self.not_a_map + " " + tr("Apply asks whether to run its entry point anyway."))
        if self.map_error is not None:
            return message_html(tr("This image cannot be run."), self.map_error)
        if self.map_facts is not None:
            return facts_html(self.map_title, self.map_facts)
        return package_html(self.package, self.environment, self.problems, self.worker_error, self.trusted, tr)

    def _served_html(self, tr) -> str:
        if self.served_models is None:
            return message_html(tr("The server cannot be used."), self.error or "")
        if self.served is None:
            detail = self.error or tr("Choose one of its {count} models.").format(count=len(self.served_models))
            return message_html(tr("Served by {server}").format(server=self.choice.server_url), detail)
        return served_html(self.served, self.choice.server_url, tr)


def describe_served(choice: Choice, server) -> Card:
    """The card of the model ``choice`` names (a served model's name, or the path of the same package) on
    ``server`` (a ``RemoteServer``), with every model it serves. Slow (it asks the server): off the GUI thread."""
    card = Card(choice)
    try:
        card.served_models = server.models()
        if choice.package_path:
            card.served = server.describe(server.find(choice.package_path))
    except MonaiDeployerError as error:
        card.error = str(error)
    return card


def describe(choice: Choice, runner, is_trusted: Callable[[PackageInfo], bool]) -> Card:
    """The card for ``choice``, with ``runner``'s worker checked against it. Slow (it opens the package, starts the
    worker, inspects an image): call it off the GUI thread. Problems go in the card, never raised (a path being
    typed is often not valid yet)."""
    try:
        package = choice.open()
    except Exception as error:
        return Card(choice, error=str(error) if isinstance(error, MonaiDeployerError) else
                    f"{type(error).__name__}: {error}")
    card = Card(choice, package)
    try:
        if package.kind.own_environment:  # described from its image, not against the worker
            _describe_image(card)
        else:
            card.trusted = is_trusted(package)
            card.environment = runner.environment()
            card.problems = runner.check_requirements(package)
    except MonaiDeployerError as error:
        card.worker_error = str(error)
    except Exception as error:
        card.worker_error = f"{type(error).__name__}: {error}"
    return card


def _describe_image(card: Card) -> None:
    """A MAP's manifests, resources and CUDA verdict, read from the image before any run."""
    from ..packages.map_image import describe_map

    try:
        facts = card.package.kind.inspect(card.package)
    except NotAMapError as error:
        card.not_a_map = str(error)
        return
    except MonaiDeployerError as error:
        card.map_error = str(error)
        return
    card.map_title = f"{facts.title} {facts.version}".strip()
    card.map_facts = describe_map(facts, facts.verdict(gpu_requested=card.choice.device != "cpu"))


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


def served_html(model, server: str, tr: Callable[[str], str] = str) -> str:
    """The card of a served model (``serving.remote.ServedModel``): what its package says, and where it runs."""
    e = html.escape
    parts = [f"<h3>{e(model.name)} <small>{e(model.version)}</small></h3>"]
    if model.description:
        parts.append(f"<p>{e(model.description)}</p>")
    parts.append("<p><b>{}</b> {}<br><b>{}</b> {}</p>".format(
        e(tr("Mode:")), e(model.mode), e(tr("Runs on:")), e(tr("{server}, as the model {model}").format(
            server=server, model=model.model))))
    if model.labels:
        parts.append(_labels_html(model, tr))
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
