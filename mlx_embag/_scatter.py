"""Dense float32 weight gradients from per-position contributions, for the reference path.

A scatter-add is fast but adds in an unspecified order on the GPU; with
``deterministic=True`` the contributions are sorted by row and each row's run
is summed in a fixed order instead (:func:`run_sums`).
"""

from __future__ import annotations

import mlx.core as mx

_F32 = mx.float32


def scatter_add_axis(rows2d, values, num_rows):
    """``out[rows2d[i, j], j] += values[i, j]`` into float32 zeros of ``num_rows`` rows.

    This is MLX's ``scatter_add_axis`` (the VJP of ``take_along_axis``), which
    MLX does not export directly. For one element per (bag, column), as in max
    mode, it is several times faster on the CPU than element-wise ``.at[r, c]``.

    Example:
        >>> import mlx.core as mx
        >>> scatter_add_axis(mx.array([[1, 0]]), mx.array([[5.0, 7.0]]), 2).tolist()
        [[0.0, 7.0], [5.0, 0.0]]
    """
    zeros = mx.zeros((num_rows, values.shape[-1]), dtype=_F32)
    return mx.vjp(lambda z: mx.take_along_axis(z, rows2d, axis=0), [zeros], [values])[1][0]


def scatter_rows(values, rows, coef, num_embeddings, deterministic):
    """``dW[rows[i]] += coef[i] * values[i]`` as a dense float32 (V, D) gradient.

    ``deterministic`` sorts positions by row and sums each row's run with
    ``mx.segmented_mm`` (one fixed-order reduction per run) instead of relying
    on a scatter-add, whose GPU kernel adds atomically in an unspecified order.

    Example:
        >>> import mlx.core as mx
        >>> scatter_rows(mx.ones((3, 2)), mx.array([2, 0, 2]), None, 3, True).tolist()
        [[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]]
    """
    d = values.shape[-1]
    if not deterministic or rows.size == 0:
        g = values if coef is None else values * coef[..., None]
        return mx.zeros((num_embeddings, d), dtype=_F32).at[rows].add(g)
    coef = None if coef is None else coef.reshape(-1)
    srt, sums = run_sums(rows.reshape(-1), values.reshape(-1, d), coef)
    return mx.zeros((num_embeddings, d), dtype=_F32).at[srt].add(sums)


def run_sums(rows, values, coef):
    """Keys sorted, and each run of equal keys summed in a fixed order.

    Returns ``(sorted keys, sums)``: the sum of a run sits at the run's first
    position and every other position holds an exact ``+0.0``, so scattering
    the sums with any order of additions gives the same bits.

    Example:
        >>> import mlx.core as mx
        >>> keys, sums = run_sums(mx.array([5, 1, 5]), mx.array([[1.0], [2.0], [4.0]]), None)
        >>> keys.tolist(), sums.reshape(-1).tolist()
        ([1, 5, 5], [2.0, 5.0, 0.0])
    """
    n, d = rows.size, values.shape[-1]
    order = mx.argsort(rows)
    srt = mx.take(rows, order)
    pos = mx.arange(n, dtype=mx.int32)
    differs = srt[1:] != srt[:-1]
    last = mx.concatenate([differs, mx.array([True])])
    first = mx.concatenate([mx.array([True]), differs])
    run_end = mx.cummin(mx.where(last, pos + 1, n), reverse=True)
    # Each run's first position owns the whole run's sum; the others own an
    # empty segment, so the caller's scatter only ever adds exact (+0.0) zeros.
    segs = mx.stack([pos, mx.where(first, run_end, pos)], axis=1).astype(mx.uint32)
    w = mx.ones((n,), dtype=_F32) if coef is None else mx.take(coef, order)
    sums = mx.segmented_mm(w[None], mx.take(values, order, axis=0), segs).reshape(n, d) + 0.0
    return srt, sums
