"""The command line of ``python -m mlx_embag.bench`` and ``mlx-embag-bench``.

Example:
    >>> from mlx_embag.bench.cli import build_parser
    >>> build_parser().parse_args(["--shapes", "1e6x64", "--modes", "sum"]).shapes
    [(1000000, 64)]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import mlx.core as mx

from mlx_embag._spec import MODES

from .contenders import BACKENDS, available_backends
from .hardware import chip_bandwidth_gbs, device_name
from .host import host_backends, host_costs
from .report import format_checks, format_host, format_table, plot, pyplot, write_json
from .results import HostCost
from .runner import run_case
from .targets import check_host, check_targets
from .timing import MIN_RUNS
from .workloads import LAYOUTS, PASSES, Case, make_inputs


def _int_list(text):
    # Through float, so "1e3" is accepted as 1000.
    return [int(float(x)) for x in text.split(",") if x]


def _shape_list(text):
    out = []
    for item in text.split(","):
        try:
            v, d = item.lower().split("x")
            out.append((int(float(v)), int(d)))
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"shapes must look like 1000000x64, got {item!r}") from e
    return out


def _choice_list(choices):
    def parse(text):
        items = [x for x in text.split(",") if x]
        bad = [x for x in items if x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; valid: {', '.join(choices)}")
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's argument parser.

    Example:
        >>> args = build_parser().parse_args(["--quick", "--backends", "reference,take"])
        >>> args.quick, args.backends, args.repeat
        (True, ['reference', 'take'], 20)
    """
    p = argparse.ArgumentParser(
        prog="mlx-embag-bench",
        description="Time and peak memory of embedding_bag: the reference path, the Metal "
        "kernels (Apple silicon), the naive MLX composition, a bare mx.take of the "
        "same rows, and PyTorch CPU/MPS.",
    )
    p.add_argument(
        "--shapes",
        type=_shape_list,
        default=None,
        help="tables VxD, comma-separated (default 1000000x16,100000x64,20000x256)",
    )
    p.add_argument("--bag-sizes", type=_int_list, default=None, help="mean bag lengths L (default 1,4,16,64)")
    p.add_argument("--batch", type=int, default=None, help="bags per call B (default 1024)")
    p.add_argument("--modes", type=_choice_list(MODES), default=list(MODES), help="default sum,mean,max")
    p.add_argument(
        "--layouts",
        type=_choice_list(LAYOUTS),
        default=list(LAYOUTS),
        help="2d: (B, L) indices; 1d: flat indices + offsets (default both)",
    )
    p.add_argument(
        "--passes", type=_choice_list(PASSES), default=list(PASSES), help="fwd and/or fwd+bwd (default both)"
    )
    p.add_argument(
        "--backends",
        type=_choice_list(BACKENDS),
        default=list(BACKENDS),
        help="default: every one this machine can run",
    )
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    p.add_argument(
        "--repeat",
        type=int,
        default=MIN_RUNS,
        help=f"timed runs per figure, median reported (default and minimum {MIN_RUNS})",
    )
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--compile",
        action="store_true",
        help="time the MLX backends under mx.compile (no per-call graph building)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the PyTorch CPU baseline (default: torch's)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--bandwidth-gbs",
        type=float,
        default=None,
        help="memory bandwidth to compare against (default: the Apple chip's, if known)",
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes (V=1000, D=16, B=16, L=1,4,16), for a smoke test"
    )
    p.add_argument(
        "--training",
        action="store_true",
        help="time a training step per optimizer instead: sparse tables (meb.value_and_grad, "
        "meb.optimizers) against dense Adam; --shapes sets V (and D), --batch B, the "
        "first --bag-sizes L (default 100000x64,4000000x64, B=1024, L=20)",
    )
    p.add_argument(
        "--training-steps",
        type=int,
        default=5,
        help="timed steps per --training figure, median reported (default 5, minimum 3)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="memory traffic of every kernel launch from the emulator's cost model (also on a Mac), "
        "against the forward's minimum, with a roofline prediction per Apple chip; --quick: one shape, "
        "--batch: bags per shape (default 64), --json: the figures per pass",
    )
    p.add_argument(
        "--sharded",
        action="store_true",
        help="time a training step of a ShardedEmbeddingBag model instead (run under mlx.launch: "
        "bytes sent per rank, step time vs one process, peak memory per rank); --shapes sets V "
        "and D, --batch the global B, the first --bag-sizes L (default 4000000x64, B=1024, L=20)",
    )
    p.add_argument("--json", metavar="PATH", help="write every measurement and check as JSON")
    p.add_argument("--plot", metavar="PATH", help="draw time vs bag length per backend (matplotlib)")
    return p


def _refusal(args):
    # Checked before any timing, so a bad flag costs nothing.
    if args.training or args.sharded:
        return "error: --training-steps must be at least 3" if args.training_steps < 3 else None
    if args.repeat < MIN_RUNS:
        return f"error: --repeat must be at least {MIN_RUNS} (each figure is a median)"
    if args.plot and pyplot() is None:
        return (
            "error: --plot needs matplotlib, which is not installed: "
            "pip install matplotlib (or pip install 'mlx-embag[examples]')"
        )
    return None


def _print_setup(args, name, bandwidth, backends, notes):
    print(
        f"mlx-embag bench: device {name} ({platform.machine()}), mlx {mx.__version__}, "
        f"default device {mx.default_device()}, median of {args.repeat} runs"
    )
    if bandwidth is not None:
        print(f"memory bandwidth: {bandwidth:g} GB/s")
    for note in notes:
        print(note)
    if args.torch_threads and "torch" in backends:
        import torch

        torch.set_num_threads(args.torch_threads)
    if "torch" in backends:
        import torch

        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if args.compile:
        print("MLX backends timed under mx.compile")


def _training(args) -> int:
    from .training import format_training, run_training

    shapes = args.shapes or ([(1000, 16), (20000, 16)] if args.quick else [(100_000, 64), (4_000_000, 64)])
    batch = args.batch or (64 if args.quick else 1024)
    bag = (args.bag_sizes or [4 if args.quick else 20])[0]
    print(
        f"mlx-embag bench --training: device {device_name()} ({platform.machine()}), mlx {mx.__version__}, "
        f"D={shapes[0][1]} B={batch} L={bag} sum, median of {args.training_steps} steps "
        f"after {args.warmup} warm-up"
    )
    results = run_training(
        [v for v, _ in shapes],
        dim=shapes[0][1],
        batch=batch,
        bag=bag,
        repeat=args.training_steps,
        warmup=args.warmup,
        seed=args.seed,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print(format_training(results))
    return 0


def main(argv=None) -> int:
    """Entry point of ``python -m mlx_embag.bench`` and ``mlx-embag-bench``; returns 0.

    Returns 2, with the reason on stderr, for flags it refuses.

    Example:
        >>> main(["--quick", "--repeat", "5"])  # a median of 5 runs is refused
        2
    """
    args = build_parser().parse_args(argv)
    refusal = _refusal(args)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    if args.training:
        return _training(args)
    if args.profile:
        from .profile import run_profile

        rows = run_profile(
            quick=args.quick, batch=args.batch or 64, log=lambda m: print(m, file=sys.stderr, flush=True)
        )
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"profile": rows}, f, indent=1)
            print(f"wrote {args.json}")
        return 0
    if args.sharded:
        from .sharded import main_sharded

        return main_sharded(args, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    shapes = args.shapes or ([(1000, 16)] if args.quick else [(1_000_000, 16), (100_000, 64), (20_000, 256)])
    bag_sizes = args.bag_sizes or ([1, 4, 16] if args.quick else [1, 4, 16, 64])
    batch = args.batch or (16 if args.quick else 1024)

    name = device_name()
    bandwidth = args.bandwidth_gbs
    if bandwidth is None and mx.metal.is_available():
        bandwidth = chip_bandwidth_gbs(name)
    backends, notes = available_backends(args.backends)
    _print_setup(args, name, bandwidth, backends, notes)
    # Progress goes to stderr, so stdout holds only the report.
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    results, skipped, host = [], [], []
    # The host cost needs no GPU (the Metal path runs on stub kernels), so it is measured
    # for "metal" (and "auto", the default) whenever "metal" was asked for, available here or not.
    host_names = host_backends(args.backends)
    for V, D in shapes:
        for L in bag_sizes:
            for layout in args.layouts:
                for mode in args.modes:
                    case = Case(V, D, batch, L, layout, mode, args.dtype)
                    log(f"V={V} D={D} B={batch} L={L} {layout} {mode}")
                    if "fwd" in args.passes and set(host_names) - {"take"}:
                        inp = make_inputs(case, args.seed)
                        costs = host_costs(case, inp, host_names)
                        host += [HostCost(case, b, us) for b, us in costs.items()]
                        del inp
                    results += run_case(
                        case,
                        backends,
                        args.passes,
                        warmup=args.warmup,
                        repeat=args.repeat,
                        seed=args.seed,
                        bandwidth=bandwidth,
                        compile=args.compile,
                        log=log,
                        skipped=skipped,
                    )
    checks = check_targets(results) + check_host(host)
    print()
    print(format_table(results, backends, bandwidth))
    print(format_host(host))
    print()
    print(format_checks(checks))
    if skipped:
        print(f"{len(skipped)} measurements could not run (details in stderr and --json):")
        for msg in skipped[:5]:
            print("  " + msg)
    if args.quick:
        print(
            "(--quick: at tiny sizes the times are mostly Python and graph-building "
            "overhead; the targets are meant for the default sizes)"
        )
    if args.json:
        meta = {
            "device": name,
            "machine": platform.machine(),
            "mlx": mx.__version__,
            "bandwidth_gbs": bandwidth,
            "repeat": args.repeat,
            "notes": notes,
            "compiled": args.compile,
            "skipped": skipped,
        }
        write_json(args.json, meta, results, checks, host)
        print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0
