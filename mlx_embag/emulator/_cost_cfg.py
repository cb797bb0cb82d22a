"""The control flow and source lines of a cost build, for the profiler.

SanitizerCoverage's tables of a kernel object give every instrumented basic
block's address (``pc-table``) and every block's successors
(``control-flow``). :func:`post_dominators` computes each block's immediate
post-dominator, where the runtime's replay lets the lanes of a divergent
branch run together again; :func:`source_lines` maps instruction addresses to
lines of the generated kernel source through the object's line tables
(``llvm-symbolizer``, else ``addr2line``; without either, lines are unknown).

Example:
    >>> # 0 -> 1 | 2 -> 3: the branch at 0 joins at 3; 3 returns.
    >>> post_dominators([[1, 2], [3], [3], []])
    [3, 3, 3, -1]
"""

from __future__ import annotations

import functools
import glob
import shutil
import subprocess


def post_dominators(successors: list[list[int]]) -> list[int]:
    """Immediate post-dominator of each block (-1: only the exit post-dominates it).

    Blocks without successors return; a virtual exit follows all of them. Blocks
    that cannot reach an exit (an endless loop) get -1 too. Cooper, Harvey and
    Kennedy's iterative algorithm on the reversed graph.

    Example:
        >>> # a loop: 0 -> 1, 1 -> 1 | 2; the loop's exit 2 post-dominates its header.
        >>> post_dominators([[1], [1, 2], []])
        [1, 2, -1]
    """
    n = len(successors)
    exit_node = n
    preds: list[list[int]] = [[] for _ in range(n + 1)]  # edges of the reversed graph
    for b, succ in enumerate(successors):
        if not succ:
            preds[exit_node].append(b)
        for s in succ:
            preds[s].append(b)
    # Post-order of the reversed graph from the exit (iterative DFS).
    order: list[int] = []
    seen = [False] * (n + 1)
    seen[exit_node] = True
    stack = [(exit_node, iter(preds[exit_node]))]
    while stack:
        node, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            order.append(node)
            stack.pop()
        elif not seen[nxt]:
            seen[nxt] = True
            stack.append((nxt, iter(preds[nxt])))
    rank = {node: i for i, node in enumerate(order)}
    idom = {exit_node: exit_node}

    def intersect(a: int, b: int) -> int:
        while a != b:
            while rank[a] < rank[b]:
                a = idom[a]
            while rank[b] < rank[a]:
                b = idom[b]
        return a

    changed = True
    while changed:
        changed = False
        for node in reversed(order):
            if node == exit_node:
                continue
            # Predecessors in the reversed graph are the block's successors (and the exit).
            cands = [s for s in (successors[node] or [exit_node]) if s in idom]
            if not cands:
                continue
            new = cands[0]
            for c in cands[1:]:
                new = intersect(c, new)
            if idom.get(node) != new:
                idom[node] = new
                changed = True
    return [idom[b] if b in idom and idom[b] != exit_node else -1 for b in range(n)]


def block_graph(pcs: list[int], cfs: list[int]) -> tuple[list[list[int]], int]:
    """The successor lists of a module's blocks from its tables.

    ``pcs`` holds the instrumented blocks' addresses (guard order), ``cfs`` the
    control-flow table (block, successors..., 0, callees..., 0 for every block).
    Blocks the table lists but that are not instrumented (``unreachable`` ones)
    get numbers after the instrumented ones.

    Returns:
        (successors per block, number of instrumented blocks)

    Example:
        >>> block_graph([100, 200], [100, 200, 0, 0, 200, 0, 0])
        ([[1], []], 2)
    """
    index = {pc: i for i, pc in enumerate(pcs)}
    succ: dict[int, list[int]] = {}
    extra: list[int] = []

    def node(pc: int) -> int:
        if pc not in index:
            index[pc] = len(pcs) + len(extra)
            extra.append(pc)
        return index[pc]

    i = 0
    while i < len(cfs):
        b = node(cfs[i])
        i += 1
        out = []
        while cfs[i]:
            out.append(node(cfs[i]))
            i += 1
        i += 1
        while cfs[i]:  # callees: the replay assumes calls were inlined
            i += 1
        i += 1
        succ[b] = out
    total = len(pcs) + len(extra)
    return [succ.get(b, []) for b in range(total)], len(pcs)


def instrumented_post_dominators(pcs: list[int], cfs: list[int]) -> list[int]:
    """:func:`post_dominators` of a module's instrumented blocks (guard order).

    A post-dominator that is not instrumented is replaced by its own, until one is.

    Example:
        >>> instrumented_post_dominators([10, 20, 30, 40], [10, 20, 30, 0, 0, 20, 40, 0, 0,
        ...                                                 30, 40, 0, 0, 40, 0, 0])
        [3, 3, 3, -1]
    """
    succ, n = block_graph(pcs, cfs)
    ipdom = post_dominators(succ)
    out = []
    for b in range(n):
        p = ipdom[b]
        while p >= n:
            p = ipdom[p]
        out.append(p)
    return out


@functools.lru_cache(maxsize=1)
def _symbolizer() -> list[str] | None:
    tool = shutil.which("llvm-symbolizer") or next(
        iter(sorted(glob.glob("/usr/bin/llvm-symbolizer-*"))), None
    )
    if tool:
        return [tool, "--inlines", "--functions=none", "--output-style=GNU", "--addresses"]
    tool = shutil.which("addr2line")
    return [tool, "-i", "-a"] if tool else None


def source_lines(obj: str, addresses: list[int], source_name: str = "kernel.metal") -> dict[int, int | None]:
    """Line in ``source_name`` of each address of the object ``obj`` (relative to its load address).

    Takes the innermost inlined frame that lies in ``source_name`` (a helper in
    the kernel's header reports its own line). ``None`` where unknown.
    """
    tool = _symbolizer()
    result: dict[int, int | None] = {a: None for a in addresses}
    if not tool or not addresses:
        return result
    addrs = sorted(set(addresses))
    if tool[0].endswith("addr2line"):
        cmd = tool[:1] + ["-e", obj] + tool[1:] + [hex(a) for a in addrs]
    else:
        cmd = tool + ["--obj=" + obj] + [hex(a) for a in addrs]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return result
    # Each address is echoed ("0x...") before its frames, innermost first.
    blocks: list[list[str]] = []
    for line in out.splitlines():
        if line.startswith("0x"):
            blocks.append([])
        elif blocks and line.strip():
            blocks[-1].append(line.strip())
    for a, frames in zip(addrs, blocks):
        for loc in frames:
            path, _, rest = loc.rpartition(":")
            line_no = rest.split(" ")[0]
            if path.endswith(source_name) and line_no.isdigit() and int(line_no) > 0:
                result[a] = int(line_no)
                break
    return result
