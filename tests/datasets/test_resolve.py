"""File resolution: order of places, checksums, downloads, and the offline error."""

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from stgraph.datasets import ChecksumError, DatasetNotFoundError, get_card, list_datasets, resolve_files
from stgraph.datasets.cards import CardFile, DatasetCard
from stgraph.datasets.resolve import mirror_dirs


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def card_for(url: str, files: dict[str, bytes], archive: str | None = "a.zip") -> DatasetCard:
    return DatasetCard(
        name="toy",
        title="toy",
        folder="toy",
        loader="none",
        files=tuple(CardFile(path=p, sha256=sha(b)) for p, b in files.items()),
        download={"url": url, **({"archive": archive} if archive else {})},
        homepage=url,
    )


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("STGRAPH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STGRAPH_DATA_DIR", raising=False)
    return tmp_path


def test_cards_match_the_mirror_checksums():
    """Every card's SHA-256 equals the mirror's SHA256SUMS line for that file."""
    sums_file = next(p / "SHA256SUMS" for p in mirror_dirs() if (p / "SHA256SUMS").is_file())
    sums = {line.split()[1]: line.split()[0] for line in sums_file.read_text().splitlines() if line.strip()}
    assert list_datasets() == ["aqi36", "cn-stations", "era5-uk-t2m", "uci-beijing-12"]
    for name in list_datasets():
        card = get_card(name)
        assert card.url.startswith("https://") and card.licence and card.citation
        for f in card.files:
            assert sums[f"{card.folder}/{f.path}"] == f.sha256


def test_unknown_dataset_lists_choices():
    with pytest.raises(KeyError, match="available"):
        get_card("beijing")


def test_data_dir_comes_first_and_is_verified(isolated):
    content = b"a,b\n1,2\n"
    card = card_for("file:///nonexistent.zip", {"x.csv": content})
    (isolated / "mine" / "toy").mkdir(parents=True)
    (isolated / "mine" / "toy" / "x.csv").write_bytes(content)
    assert resolve_files(card, isolated / "mine", use_mirror=False)["x.csv"] == isolated / "mine" / "toy" / "x.csv"
    (isolated / "mine" / "toy" / "x.csv").write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="x.csv"):
        resolve_files(card, isolated / "mine", use_mirror=False)


def test_env_data_dir_is_searched(isolated, monkeypatch):
    content = b"42\n"
    (isolated / "env" / "toy").mkdir(parents=True)
    (isolated / "env" / "toy" / "x.csv").write_bytes(content)
    monkeypatch.setenv("STGRAPH_DATA_DIR", str(isolated / "env"))
    card = card_for("file:///nonexistent.zip", {"x.csv": content})
    assert resolve_files(card, use_mirror=False, download=False)["x.csv"].read_bytes() == content


def test_download_extracts_from_nested_zip_and_verifies(isolated):
    files = {"x.csv": b"station,time\n", "y.txt": b"hello\n"}
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        for p, b in files.items():
            z.writestr(f"deep/folder/{p}", b)
    outer = isolated / "a.zip"
    with zipfile.ZipFile(outer, "w") as z:
        z.writestr("inner.zip", inner.getvalue())
    card = card_for(outer.as_uri(), files)
    got = resolve_files(card, use_mirror=False)
    assert {k: v.read_bytes() for k, v in got.items()} == files
    assert all(Path(v).parent == isolated / "cache" / "toy" for v in got.values())
    bad = card_for(outer.as_uri(), {"x.csv": b"other content"})
    (isolated / "cache" / "toy" / "x.csv").unlink()
    with pytest.raises(DatasetNotFoundError, match="download failed.*SHA-256"):
        resolve_files(bad, use_mirror=False)


def test_offline_error_names_every_place_and_the_url(isolated):
    card = card_for("https://example.org/data.zip", {"x.csv": b"1"})
    with pytest.raises(DatasetNotFoundError) as err:
        resolve_files(card, isolated / "given", download=False)
    msg = str(err.value)
    for needle in (
        "x.csv",
        "--data-dir",
        str(isolated / "given" / "toy"),
        "cache",
        "mirror",
        "https://example.org/data.zip",
        "download disabled",
    ):
        assert needle in msg


def test_file_outside_the_archive_explains_itself(isolated):
    card = get_card("uci-beijing-12")
    with pytest.raises(DatasetNotFoundError, match="not part of|not downloaded"):
        resolve_files(card, isolated / "nothing", use_mirror=False, download=False)
