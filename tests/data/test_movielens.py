"""The MovieLens parser on tiny files written in the GroupLens format (no network)."""

import pytest

from recfunnel.data import movielens
from recfunnel.errors import DataError

ITEMS = [
    "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
    "2|Café (1990)|01-Jan-1990||http://x|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0",
    "3|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
]
USERS = ["1|24|M|technician|85711", "2|53|F|other|94043"]
RATINGS = ["1\t1\t5\t100", "1\t3\t3\t200", "2\t2\t4\t50", "2\t1\t1\t60"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    root = tmp_path / "ml-100k"
    root.mkdir()
    (root / "u.item").write_bytes("\n".join(ITEMS).encode("latin-1"))
    (root / "u.user").write_text("\n".join(USERS))
    (root / "u.data").write_text("\n".join(RATINGS))
    (root / "u1.base").write_text("\n".join(RATINGS[:3]))
    (root / "u1.test").write_text(RATINGS[3])
    monkeypatch.setenv("RECFUNNEL_CACHE_DIR", str(tmp_path / "cache"))
    return root


def test_keyed_by_title_merges_ids_and_keeps_latest_rating(folder):
    ds = movielens.load(folder, item_key="title")
    assert ds.items.ids == ["Toy Story (1995)", "Café (1990)"]  # latin-1 decoded
    assert len(ds.items) == 2 and len(ds.users) == 2
    # user 1 rated ids 1 and 3, both "Toy Story": one row, the later rating (3 at t=200)
    assert len(ds.interactions) == 3
    row = (ds.interactions.users == 0) & (ds.interactions.items == 0)
    assert ds.interactions.ratings[row].tolist() == [3.0]
    assert ds.item_table["genres"].shape == (2, 19)
    assert ds.item_table["year"].tolist() == [1995, 1990]
    assert ds.user_table["occupation"].tolist() == ["technician", "other"]


def test_keyed_by_id_keeps_every_movie(folder):
    ds = movielens.load(folder, item_key="id")
    assert ds.items.ids == ["1", "2", "3"]
    assert ds.titles()[2] == "Toy Story (1995)"
    assert len(ds.interactions) == 4


def test_predefined_fold(folder):
    ds = movielens.load(folder, item_key="id")
    train, test = movielens.fold(ds, "u1")
    assert len(train) == 3 and len(test) == 1
    with pytest.raises(DataError, match="unknown MovieLens fold"):
        movielens.fold(ds, "u9")


def test_missing_folder_names_the_fix_in_each_language(tmp_path, capsys):
    with pytest.raises(DataError, match="point data_dir= at") as caught:
        movielens.find(tmp_path)  # Python callers read Python
    assert "--data-dir" not in str(caught.value)
    assert "point --data-dir at" in caught.value.for_cli()
    from recfunnel.cli import main

    argv = ["train", "--data-dir", str(tmp_path), "--model", "most-popular"]
    assert main(argv) == 2  # the command line reads its flag
    err = capsys.readouterr().err
    assert err.startswith("error: no MovieLens 100k files") and "--data-dir" in err
    assert "data_dir=" not in err


def test_real_files_match_the_published_checksums(ml100k):
    for name, digest in movielens.SHA256.items():
        assert movielens._sha256(ml100k / name) == digest


def _zip_of(folder, tmp_path):
    import zipfile

    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in folder.iterdir():
            zf.write(file, f"ml-100k/{file.name}")
    return archive


def test_download_checks_sums_and_caches(folder, tmp_path, monkeypatch):
    """The download path, served from a local file:// URL (no network in unit tests)."""
    archive = _zip_of(folder, tmp_path)
    sums = {name: movielens._sha256(folder / name) for name in movielens.SHA256}
    monkeypatch.setattr(movielens, "URL", archive.as_uri())
    monkeypatch.setattr(movielens, "SHA256", sums)
    monkeypatch.delenv("RECFUNNEL_DATA_DIR", raising=False)
    found = movielens.find()  # nothing local: downloads into $RECFUNNEL_CACHE_DIR
    assert found == tmp_path / "cache" / "ml-100k"
    assert movielens.load(item_key="id").items.ids == ["1", "2", "3"]


def test_download_refuses_a_corrupted_archive(folder, tmp_path, monkeypatch):
    archive = _zip_of(folder, tmp_path)
    monkeypatch.setattr(movielens, "URL", archive.as_uri())
    monkeypatch.delenv("RECFUNNEL_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="checksum mismatch"):
        movielens.find()  # the real checksums do not match the tiny files
    assert not (tmp_path / "cache" / "ml-100k").exists()
