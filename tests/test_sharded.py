"""ShardedEmbeddingBag on 2, 3 and 4 ranks over loopback (``mlx.launch --backend ring``).

Each launch runs tests/sharded_worker.py on every rank; one launch checks many
configurations (forward against ``embedding_bag`` on the full table, the
block's gradient, and the reassembled table after training against
single-process training on every rank's batch, summed). mlx.launch stops the
other ranks when one dies but still exits 0, so a launch passes only when
every rank printed ``DONE``; every launch has a timeout, after which its
process group is killed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlx_embag as meb

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "sharded_worker.py"
LAUNCH = [sys.executable, "-c", "from mlx._distributed_utils.launch import main; main()"]


class LaunchFailed(AssertionError):
    pass


def launch(ranks, *args, timeout=120):
    """Run the worker on ``ranks`` ranks; return its ``CHECK`` lines, or raise LaunchFailed."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    cmd = [*LAUNCH, "--backend", "ring", "-n", str(ranks), "--python", sys.executable, str(WORKER), *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the ranks it started
        out, err = proc.communicate()
        raise LaunchFailed(
            f"{ranks} ranks timed out after {timeout} s:\n{out[-2000:]}\n{err[-2000:]}"
        ) from None
    done = set(re.findall(r"^DONE (\d+)$", out, flags=re.M))
    if done != {str(r) for r in range(ranks)}:
        raise LaunchFailed(f"ranks {sorted(done)} of {ranks} finished:\n{out[-3000:]}\n{err[-3000:]}")
    return re.findall(r"^CHECK (\S+) (.*)$", out, flags=re.M)


def assert_all_ok(checks, ranks, per_rank):
    failed = [c for c in checks if c[1] != "ok"]
    assert not failed, failed[:5]
    assert len(checks) == ranks * per_rank, len(checks)


def _expected(names):
    """Checks per rank the worker makes for these configurations."""
    sys.path.insert(0, str(WORKER.parent))
    from sharded_worker import CONFIGS

    n = 0
    for name in names:
        cfg = CONFIGS[name]
        n += 1 if cfg.get("poison") or "dtype" in cfg else 3 + bool(cfg.get("psw"))
    return n


def test_two_ranks_every_configuration():
    from sharded_worker import CONFIGS

    assert_all_ok(launch(2, "reference", "all"), 2, _expected(CONFIGS))


@pytest.mark.parametrize("ranks", [3, 4])
def test_three_and_four_ranks(ranks):
    # Subsets: with more ranks than cores each collective costs a time slice here (~20 ms).
    from sharded_worker import QUICK

    names = QUICK if ranks == 3 else ("max_2d_pad", "sparse_adam_sum")
    assert_all_ok(launch(ranks, "reference", ",".join(names)), ranks, _expected(names))


def test_two_ranks_metal_path():
    # The Metal kernels on each shard (emulated on a machine without an Apple GPU), and the
    # sparse optimizers' Metal row sums.
    names = ("max", "sparse_adam_sum")
    assert_all_ok(launch(2, "metal", ",".join(names), timeout=240), 2, _expected(names))


def test_a_dead_rank_fails_the_launch():
    with pytest.raises(LaunchFailed, match="of 2 finished"):
        launch(2, "reference", "sum", "die", timeout=60)


def test_one_process_group_holds_the_whole_table():
    w = mx.random.normal((7, 3), key=mx.random.key(0))
    bag = meb.ShardedEmbeddingBag.from_pretrained(w, mode="max", group=mx.distributed.init())
    x, off = mx.array([6, 0, 2, 5, 5]), mx.array([0, 3])
    assert bag.weight.shape == (7, 3) and bag.row_offset == 0
    np.testing.assert_array_equal(np.array(bag(x, off)), np.array(meb.embedding_bag(x, w, off, mode="max")))


def test_module_conventions(tmp_path):
    # A parameter that saves and loads like any module's, freezes, and shows its block in the repr.
    bag = meb.ShardedEmbeddingBag(6, 2, mode="sum", padding_idx=1)
    assert list(bag.parameters()) == ["weight"] and bag.weight[1].tolist() == [0.0, 0.0]
    bag.save_weights(str(tmp_path / "block.safetensors"))
    other = meb.ShardedEmbeddingBag(6, 2, mode="sum", padding_idx=1)
    other.load_weights(str(tmp_path / "block.safetensors"))
    np.testing.assert_array_equal(np.array(other.weight), np.array(bag.weight))
    assert "rank=0/1" in repr(bag) and "padding_idx=1" in repr(bag)
    frozen = meb.ShardedEmbeddingBag.from_pretrained(mx.ones((4, 2)), mode="sum")
    assert frozen.trainable_parameters() == {}


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="capacity"):
        meb.ShardedEmbeddingBag(5, 2, capacity=(3,))
    bag = meb.ShardedEmbeddingBag(5, 2, mode="sum", capacity=(2, 1))
    with pytest.raises(ValueError, match="capacity"):
        bag(mx.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match="_weight"):
        meb.ShardedEmbeddingBag(5, 2, _weight=mx.zeros((4, 2)))


def test_bench_sharded_under_the_launcher():
    # The benchmark as the README runs it; the bytes it reports are the ring algorithms' count of
    # this scheme's collectives, recomputed here from the sizes: K=2, local B=32 bags of L=4, D=16.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [*LAUNCH, "--backend", "ring", "-n", "2", "--python", sys.executable]
    cmd += ["-m", "mlx_embag.bench", "--sharded", "--quick", "--training-steps", "3", "--warmup", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    out = proc.stdout
    assert "sharded step, 2 ranks" in out, out + proc.stderr[-3000:]
    k, b, n, d = 2, 32, 128, 16
    sizes = 2 * (k - 1) * 12 // k  # all_max of three int32
    call = (k - 1) * 4 * (n + b + 1)  # all_gather of indices and offsets
    forward = 2 * (k - 1) * (k * b * d * 4) // k  # all_sum of every rank's partial bags
    backward = (k - 1) * b * d * 4  # all_gather of the cotangents
    sent = int(re.search(r"bytes sent per rank per step: (\d+)", out).group(1))
    assert sent == sizes + call + forward + backward
    bound = int(re.search(r"lower bound of this scheme (\d+)", out).group(1))
    assert bound == (k - 1) * 4 * (n + b + 1 + 2 * b * d) < sent
    assert re.search(r"peak memory per rank: .*: met\)", out)
