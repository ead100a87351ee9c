"""Find a dataset's files, verify their SHA-256, download them if nowhere on disk.

Order: ``data_dir`` argument (``--data-dir``), ``$STGRAPH_DATA_DIR``, the mirror
``../shared/datasets`` beside the checkout (or the working directory), the cache
``$STGRAPH_CACHE`` (default ``~/.cache/stgraph``), then the official URL into the cache. Each
place is searched as ``<place>/<card.folder>/<file>``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import urllib.request
import zipfile
from pathlib import Path

from stgraph.datasets.cards import CardFile, DatasetCard


class DatasetNotFoundError(FileNotFoundError):
    """No verified copy anywhere and no download: names every place looked and the URL."""


class ChecksumError(ValueError):
    """A file exists but its content is not the one the card describes."""


_VERIFIED: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) for this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _VERIFIED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _VERIFIED[key] = h.hexdigest()
    return _VERIFIED[key]


def verify(path: Path, expected: str) -> Path:
    got = sha256_of(path)
    if got != expected:
        raise ChecksumError(
            f"{path}: SHA-256 {got} does not match the dataset card's {expected}; "
            "the file is corrupt or a different version: delete it or replace it"
        )
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("STGRAPH_CACHE", Path.home() / ".cache" / "stgraph"))


def mirror_dirs() -> list[Path]:
    """``../shared/datasets`` beside the repository checkout and beside the working directory."""
    repo = Path(__file__).resolve().parents[2]
    out = []
    for base in (repo.parent, Path.cwd().parent):
        p = (base / "shared" / "datasets").resolve()
        if p not in out:
            out.append(p)
    return out


def search_roots(data_dir: str | Path | None = None, *, use_mirror: bool = True) -> list[tuple[str, Path]]:
    roots = []
    if data_dir is not None:
        roots.append(("--data-dir", Path(data_dir)))
    if os.environ.get("STGRAPH_DATA_DIR"):
        roots.append(("$STGRAPH_DATA_DIR", Path(os.environ["STGRAPH_DATA_DIR"])))
    if use_mirror:
        roots += [("mirror", p) for p in mirror_dirs()]
    roots.append(("cache", cache_dir()))
    return roots


def _extract_member(archive: bytes, name: str) -> bytes | None:
    """Find ``name`` (by basename) in a zip, descending into nested zips."""
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        for info in z.infolist():
            if Path(info.filename).name == name:
                return z.read(info)
        for info in z.infolist():
            if info.filename.lower().endswith(".zip"):
                found = _extract_member(z.read(info), name)
                if found is not None:
                    return found
    return None


def _fetch(url: str, timeout: float = 60.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (card URLs are https/file)
        return r.read()


def _download(card: DatasetCard, wanted: list[CardFile], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    archive = None
    for f in wanted:
        if f.url:
            data = _fetch(f.url)
        elif card.download.get("archive"):
            if archive is None:
                archive = _fetch(card.download["url"])
            data = _extract_member(archive, f.path)
            if data is None:
                raise FileNotFoundError(f"{f.path} is not in {card.download['url']}")
        else:
            data = _fetch(card.download["url"])
        tmp = dest / (f.path + ".part")
        tmp.write_bytes(data)
        verify(tmp, f.sha256)
        shutil.move(tmp, dest / f.path)


def resolve_files(
    card: DatasetCard, data_dir: str | Path | None = None, *, download: bool = True, use_mirror: bool = True
) -> dict[str, Path]:
    """Paths of every file of ``card``, each verified against its SHA-256."""
    roots = search_roots(data_dir, use_mirror=use_mirror)
    found: dict[str, Path] = {}
    for f in card.files:
        for _, root in roots:
            p = root / card.folder / f.path
            if p.is_file():
                found[f.path] = verify(p, f.sha256)
                break
    missing = [f for f in card.files if f.path not in found]
    if not missing:
        return found
    fetchable = [f for f in missing if f.in_archive or f.url]
    cache = cache_dir() / card.folder
    problem = ""
    if download and fetchable:
        try:
            _download(card, fetchable, cache)
            for f in fetchable:
                found[f.path] = cache / f.path
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            problem = f"download failed: {e}"
    elif not download:
        problem = "download disabled"
    still = [f for f in card.files if f.path not in found]
    if still:
        places = "\n".join(f"  - {label}: {root / card.folder}" for label, root in roots)
        notes = "".join(f"\n  note on {f.path}: {' '.join(f.note.split())}" for f in still if f.note)
        raise DatasetNotFoundError(
            f"dataset '{card.name}': {', '.join(f.path for f in still)} not found. Looked in:\n{places}\n"
            f"official source: {card.url}" + (f"\n{problem}" if problem else "") + notes
        )
    return found


def provenance(card: DatasetCard, files: dict[str, Path]) -> dict:
    """What a loaded dataset records in ``StationData.meta``: the card's name, the files read and
    their expected SHA-256."""
    return {
        "dataset": card.name,
        "files": {k: str(v) for k, v in files.items()},
        "sha256": {f.path: f.sha256 for f in card.files},
    }
