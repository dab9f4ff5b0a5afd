"""``PackageInfo``: what the user picked, as the worker, the command line and the panel need it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .kind import Settings


@dataclass
class PackageInfo:
    """A model package, opened: ``mode`` names its kind, ``settings`` are that kind's (typed) settings."""

    path: str
    mode: str
    name: str
    version: str = ""
    description: str = ""
    labels: dict = field(default_factory=dict)
    colors: dict = field(default_factory=dict)
    requirements: dict = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    sidecar: str = ""
    content_hash: str = ""

    @property
    def kind(self):
        """The ``PackageKind`` object: ask it, never compare ``mode``."""
        from .registry import kind_named

        return kind_named(self.mode)

    @property
    def outputs_overlap(self) -> bool:
        """One mask per label (a voxel may be in several segments), as a bundle's metadata may say."""
        return self.settings.outputs_overlap

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, document: dict) -> PackageInfo:
        document = dict(document)
        for key in ("labels", "colors"):
            document[key] = {int(value): entry for value, entry in document.get(key, {}).items()}
        document["colors"] = {value: tuple(color) for value, color in document["colors"].items()}
        from .registry import kind_named

        settings = kind_named(document["mode"]).settings_type.from_dict(document.get("settings", {}))
        return cls(**{**document, "settings": settings})
