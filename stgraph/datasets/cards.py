"""Dataset cards: YAML files in the repository's ``datasets/`` folder, one per dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CARD_KEYS = {
    "name",
    "title",
    "description",
    "folder",
    "loader",
    "homepage",
    "download",
    "licence",
    "citation",
    "files",
    "variables",
    "protocol",
}
FILE_KEYS = {"path", "sha256", "in_archive", "note", "url"}


def cards_dir() -> Path:
    """``$STGRAPH_CARDS_DIR`` or the ``datasets/`` folder beside the package."""
    env = os.environ.get("STGRAPH_CARDS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "datasets"


@dataclass(frozen=True)
class CardFile:
    path: str
    sha256: str
    in_archive: bool = True
    note: str = ""
    url: str | None = None


@dataclass(frozen=True)
class DatasetCard:
    name: str
    title: str
    folder: str
    loader: str
    files: tuple[CardFile, ...]
    description: str = ""
    homepage: str = ""
    download: dict = field(default_factory=dict)
    licence: str = ""
    citation: str = ""
    variables: tuple[dict, ...] = ()
    protocol: dict = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: str | Path) -> DatasetCard:
        d = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        unknown = set(d) - CARD_KEYS
        if unknown:
            raise ValueError(f"{path}: unknown card keys {sorted(unknown)}; allowed: {sorted(CARD_KEYS)}")
        files = []
        for i, f in enumerate(d.get("files", [])):
            bad = set(f) - FILE_KEYS
            if bad or "path" not in f or "sha256" not in f:
                raise ValueError(f"{path}: files[{i}] needs path and sha256 (allowed keys {sorted(FILE_KEYS)})")
            files.append(CardFile(**f))
        d["files"] = tuple(files)
        d["variables"] = tuple(d.get("variables") or ())
        return cls(**d)

    @property
    def url(self) -> str:
        return self.download.get("url", self.homepage)


def all_cards() -> dict[str, DatasetCard]:
    folder = cards_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset cards folder {folder} not found (set STGRAPH_CARDS_DIR)")
    cards = [DatasetCard.from_yaml(p) for p in sorted(folder.glob("*.yaml"))]
    return {c.name: c for c in cards}
