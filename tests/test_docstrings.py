"""Every public name has a docstring example, every example runs and prints what it says,
and no example leaves global state (backend context, emulator switch) changed."""

import doctest
import importlib
import inspect

import pytest

import mlx_embag
from mlx_embag import (
    _cost,
    _embag_common,
    _fallback,
    _scatter,
    _settings,
    _sharded_lookup,
    _sharded_ops,
    _sparse_kernels,
    _validate,
    autograd,
    backend,
    bench,
    compiled,
    emulator,
    functional,
    kernels,
    launchers,
    layers,
    metal_ops,
    optimizers,
    reference,
    sharded,
    sparse_grad,
)
from mlx_embag.bench import (
    cli,
    contenders,
    hardware,
    host,
    report,
    results,
    runner,
    targets,
    timing,
    training,
    workloads,
)
from mlx_embag.bench import (
    profile as bench_profile,
)
from mlx_embag.bench import (
    sharded as bench_sharded,
)
from mlx_embag.emulator import _cost_build as emulator_cost_build
from mlx_embag.emulator import _cost_cfg as emulator_cost_cfg
from mlx_embag.emulator import _cost_report as emulator_cost_report
from mlx_embag.emulator import _tokens as emulator_tokens
from mlx_embag.emulator import kernel as emulator_kernel
from mlx_embag.emulator import settings as emulator_settings
from mlx_embag.emulator import strict as emulator_strict
from mlx_embag.emulator import translate as emulator_translate
from mlx_embag.emulator import vectors as emulator_vectors

emulator_profile = importlib.import_module(
    "mlx_embag.emulator.profile"
)  # the package's `profile` is the function

# The benchmark's modules; the package itself only re-exports them (its __all__ names
# constants too, which carry no docstring of their own).
BENCH_MODULES = [
    cli,
    contenders,
    hardware,
    host,
    report,
    results,
    runner,
    bench_sharded,
    targets,
    timing,
    training,
    workloads,
    bench_profile,
]

# Modules whose docstring examples (module, functions, classes, methods) must all run.
MODULES = [
    mlx_embag,
    backend,
    functional,
    kernels,
    launchers,
    _embag_common,
    metal_ops,
    layers,
    reference,
    _scatter,
    emulator,
    emulator_kernel,
    emulator_settings,
    emulator_translate,
    emulator_strict,
    emulator_vectors,
    emulator_tokens,
    emulator_profile,
    emulator_cost_build,
    emulator_cost_cfg,
    emulator_cost_report,
    _fallback,
    bench,
    *BENCH_MODULES,
    _settings,
    _validate,
    sparse_grad,
    autograd,
    optimizers,
    _sparse_kernels,
    compiled,
    sharded,
    _sharded_ops,
    _sharded_lookup,
    _cost,
]

# Modules every public function and class of which must carry a `>>>` example.
PUBLIC_MODULES = [
    mlx_embag,
    backend,
    functional,
    layers,
    reference,
    _scatter,
    _embag_common,
    emulator,
    emulator_profile,
    sparse_grad,
    autograd,
    optimizers,
    compiled,
    sharded,
    _sharded_ops,
    _cost,
    *BENCH_MODULES,
]


def _public_names(module):
    """``__all__`` where the module has one, else the functions and classes it defines itself
    under a name without a leading underscore (imports such as ``typing.Optional`` are not its API)."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return [(module, name) for name in names]
    return [
        (module, name)
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    ]


PUBLIC = [pair for module in PUBLIC_MODULES for pair in _public_names(module)]


@pytest.fixture
def fresh_state():
    """Run with no emulator override and no backend context; fail if an example leaves either set."""
    saved_override, saved_stack = emulator_settings._override, getattr(backend._local, "stack", None)
    emulator_settings._override, backend._local.stack = None, []
    try:
        yield
        assert emulator_settings._override is None, "an example left the emulator switched (call reset())"
        assert backend._local.stack == [], "an example left a use_backend context open"
    finally:
        emulator_settings._override, backend._local.stack = saved_override, saved_stack


def _run(tests, globs):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        test.globs = dict(globs)
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module, fresh_state):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module.__name__} has no docstring example"
    assert result.failed == 0


def test_public_names_found():
    names = {f"{m.__name__}.{n}" for m, n in PUBLIC}
    assert {
        "mlx_embag.embedding_bag",
        "mlx_embag.backend.metal_unavailable_reason",
        "mlx_embag.emulator.metal_kernel",
        "mlx_embag.emulator.reset",
        "mlx_embag.bench.cli.main",
        "mlx_embag.bench.results.Result",
    } <= names
    assert "mlx_embag.layers.Optional" not in names


@pytest.mark.parametrize("module,name", PUBLIC, ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_public_name_has_a_running_example(module, name, fresh_state):
    obj = getattr(module, name)
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"{module.__name__}.{name} needs a docstring with a `>>>` example"
    # Run this object's own examples (doctest.testmod skips names a package re-exports from a submodule).
    home = inspect.getmodule(obj) or module
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(obj, name, module=home) if t.examples]
    assert tests, f"{module.__name__}.{name}: no doctest found"
    result = _run(tests, vars(home))
    assert result.failed == 0, f"{module.__name__}.{name}: {result.failed} example(s) failed"
