"""Your own network as a named dataset: a card in the user folder that records the files, their
SHA-256 and how to read them, so ``dataset: NAME`` works in every config and suite.

``stgraph datasets add NAME --long FILE [--stations FILE] [reader options]`` reads the files with
:func:`stgraph.data.readers.read_long_table` (the same checks and errors), then writes
``$STGRAPH_HOME/datasets/NAME.yaml`` (:func:`stgraph_home`). Loading verifies both checksums first:
a changed or moved file is refused with the command that re-adds it.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from stgraph.data.readers import read_long_table
from stgraph.data.station_data import StationData
from stgraph.datasets.cards import all_cards
from stgraph.datasets.resolve import ChecksumError, DatasetNotFoundError, sha256_of

# read_long_table's options a card (or an inline config's data.reader) may set
READER_OPTIONS = (
    "station_column", "time_column", "variables", "units", "freq", "irregular", "negative", "nonnegative",
    "duplicate_coordinates", "encoding",
)  # fmt: skip
# the command-line flag of each reader option (``stgraph datasets add``)
OPTION_FLAGS = {
    "station_column": "--station-column", "time_column": "--time-column", "variables": "--variables",
    "units": "--units", "freq": "--freq", "irregular": "--irregular", "negative": "--negative",
    "nonnegative": "--nonnegative", "duplicate_coordinates": "--duplicate-coordinates", "encoding": "--encoding",
}  # fmt: skip
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def stgraph_home() -> Path:
    """The user folder: ``$STGRAPH_HOME``, else ``$XDG_CONFIG_HOME/stgraph``, else ``~/.config/stgraph``."""
    if os.environ.get("STGRAPH_HOME"):
        return Path(os.environ["STGRAPH_HOME"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser() / "stgraph"


def user_cards_dir() -> Path:
    return stgraph_home() / "datasets"


def check_reader_options(options: dict, where: str) -> dict:
    """``options`` limited to :data:`READER_OPTIONS`; an unknown key is an error naming ``where``."""
    unknown = sorted(set(options) - set(READER_OPTIONS))
    if unknown:
        raise ValueError(f"{where}: unknown reader option(s) {unknown}; allowed: {list(READER_OPTIONS)}")
    return {k: v for k, v in options.items() if v is not None}


@dataclass
class UserCard:
    """A user dataset: absolute file paths, their SHA-256, the reader's options."""

    name: str
    long: str
    long_sha256: str
    stations: str | None = None
    stations_sha256: str | None = None
    reader: dict = field(default_factory=dict)
    title: str = ""
    created: str = ""

    @property
    def path(self) -> Path:
        return user_cards_dir() / f"{self.name}.yaml"

    def readd_command(self) -> str:
        """The ``stgraph datasets add`` command that re-creates this card, reader options included."""
        import shlex

        cmd = f"stgraph datasets add {self.name} --long {shlex.quote(self.long)}"
        if self.stations:
            cmd += f" --stations {shlex.quote(self.stations)}"
        for key, value in self.reader.items():
            if value is None:
                continue
            if isinstance(value, dict):
                value = ",".join(f"{k}={v}" for k, v in value.items())
            elif isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)
            cmd += f" {OPTION_FLAGS.get(key, '--' + key.replace('_', '-'))} {shlex.quote(str(value))}"
        return cmd + " --force"

    @classmethod
    def from_yaml(cls, path: Path) -> UserCard:
        """Read a card; anything that is not a card is an error naming the file."""
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a valid dataset card (unreadable YAML: {str(e).splitlines()[0]}); "
                             "fix or delete it, or re-create it with `stgraph datasets add`") from None  # fmt: skip
        if not isinstance(d, dict):
            raise ValueError(f"{path}: not a user dataset card (expected a mapping); fix or delete it")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown or "name" not in d or "long" not in d or "long_sha256" not in d:
            raise ValueError(
                f"{path}: not a user dataset card (needs name, long, long_sha256; unknown keys {unknown}); "
                "re-create it with `stgraph datasets add`"
            )
        if not isinstance(d.get("reader") or {}, dict):
            raise ValueError(f"{path}: 'reader' must be a mapping of reader options")
        return cls(**d)


def read_user_cards() -> tuple[dict[str, UserCard], dict[Path, str]]:
    """(every valid card in :func:`user_cards_dir` by name, every broken card file -> its error)."""
    folder = user_cards_dir()
    if not folder.is_dir():
        return {}, {}
    cards, broken = {}, {}
    for path in sorted(folder.glob("*.yaml")):
        try:
            card = UserCard.from_yaml(path)
        except ValueError as e:
            broken[path] = str(e)
            continue
        cards[card.name] = card
    return cards, broken


def user_cards() -> dict[str, UserCard]:
    """Every valid card in :func:`user_cards_dir` by name (empty when the folder does not exist);
    broken card files are left out here (``stgraph datasets list`` reports them)."""
    return read_user_cards()[0]


def add_user_dataset(
    name: str,
    long: str | Path,
    stations: str | Path | None = None,
    *,
    title: str = "",
    force: bool = False,
    **reader,
) -> tuple[UserCard, StationData]:
    """Validate the files by reading them, then write the card. Returns (card, the data read).

    ``reader``: :func:`~stgraph.data.readers.read_long_table`'s options (:data:`READER_OPTIONS`),
    stored in the card and applied at every load.
    """
    key = name.strip().lower()
    if not NAME_PATTERN.match(key):
        raise ValueError(f"dataset name {name!r}: use lower-case letters, digits, '.', '_' or '-' (e.g. 'my-city')")
    if key.replace("_", "-") in all_cards():
        raise ValueError(f"dataset name '{key}' is a built-in dataset; choose another name")
    reader = check_reader_options(reader, "stgraph datasets add")
    paths = {"long": Path(long).expanduser().resolve()}
    if stations is not None:
        paths["stations"] = Path(stations).expanduser().resolve()
    for role, p in paths.items():
        if not p.is_file():
            raise FileNotFoundError(f"--{role} {p}: no such file")
    existing = user_cards().get(key)
    if existing is not None and not force:
        raise ValueError(
            f"dataset '{key}' already exists ({existing.path}); pass --force (force=True) to replace it"
        )
    data = read_long_table(paths["long"], paths.get("stations"), name=key, **reader)
    card = UserCard(
        name=key,
        long=str(paths["long"]),
        long_sha256=sha256_of(paths["long"]),
        stations=str(paths["stations"]) if "stations" in paths else None,
        stations_sha256=sha256_of(paths["stations"]) if "stations" in paths else None,
        reader=reader,
        title=title or f"user dataset from {paths['long'].name}",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    card.path.parent.mkdir(parents=True, exist_ok=True)
    card.path.write_text(yaml.safe_dump(asdict(card), sort_keys=False), encoding="utf-8")
    return card, data


def load_user_dataset(card: UserCard) -> StationData:
    """Verify the card's files against their recorded SHA-256, then read them as recorded."""
    for role in ("long", "stations"):
        path, expected = getattr(card, role), getattr(card, f"{role}_sha256")
        if path is None:
            continue
        p = Path(path)
        if not p.is_file():
            raise DatasetNotFoundError(
                f"dataset '{card.name}' ({card.path}): its {role} file {p} is missing; put it back or re-add the "
                f"dataset from its new place: {card.readd_command()}"
            )
        actual = sha256_of(p)
        if actual != expected:
            raise ChecksumError(
                f"dataset '{card.name}': {p} changed since it was added (sha256 {actual[:12]}… instead of "
                f"{expected[:12]}…). If the change is intended, re-add it: {card.readd_command()}"
            )
    data = read_long_table(card.long, card.stations, name=card.name, **card.reader)
    data.meta.update(
        {"dataset": card.name, "card": str(card.path), "files": {"long": card.long, "stations": card.stations},
         "sha256": {"long": card.long_sha256, "stations": card.stations_sha256}}
    )  # fmt: skip
    return data
