"""The wheel ships the top-level metal/ folder as mlx_embag/_metal, and the loader finds it
from an installed copy (not the checkout).

Offline: ``python -m build --wheel --no-isolation`` needs ``hatchling`` (and ``build``)
installed in the test environment; CI installs them with the test extra.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    try:
        import build  # noqa: F401
        import hatchling  # noqa: F401
    except ImportError as e:  # a gap must fail, not skip
        pytest.fail(f"building the wheel offline needs hatchling and build installed: {e}")
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wheels = list(out.glob("mlx_embag-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_every_metal_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = sorted(p.name for p in (ROOT / "metal").glob("*.metal"))
    assert sources, "the checkout has no .metal files"
    sources += [p.name for p in (ROOT / "metal").glob("*.h")]  # the header every kernel is built with
    assert "embag_common.h" in sources
    missing = [s for s in sources if f"mlx_embag/_metal/{s}" not in names]
    assert not missing, f"not in the wheel as mlx_embag/_metal/...: {missing}"
    assert "mlx_embag/__init__.py" in names and "mlx_embag/_sources.py" in names
    assert not any(n.startswith("metal/") for n in names), "metal/ must not be a top-level package"


def test_wheel_version_is_the_package_version(wheel):
    """pyproject.toml takes its version from mlx_embag.__version__, the one place it is written."""
    import mlx_embag

    assert wheel.name.startswith(f"mlx_embag-{mlx_embag.__version__}-"), wheel.name


def test_installed_copy_finds_its_kernels(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)  # a wheel is installed by unpacking it
    code = (
        "import mlx_embag, mlx_embag._sources as s, pathlib;"
        "d = s.metal_dir();"
        "print(pathlib.Path(mlx_embag.__file__).resolve().parent);"
        "print(d.resolve());"
        "print(len(s.read_metal('bag_fwd')) + len(s.read_source(s.HEADER)))"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    pkg, mdir, n = r.stdout.split()
    assert Path(pkg) == (site / "mlx_embag").resolve(), "imported the checkout, not the installed copy"
    assert Path(mdir) == (site / "mlx_embag" / "_metal").resolve()
    assert int(n) == sum(len((ROOT / "metal" / f).read_text()) for f in ("bag_fwd.metal", "embag_common.h"))


def test_checkout_finds_its_kernels():
    import mlx_embag._sources as s

    assert s.metal_dir().resolve() in {(ROOT / "metal").resolve(), (ROOT / "mlx_embag" / "_metal").resolve()}
    assert s.read_metal("bag_fwd") == (ROOT / "metal" / "bag_fwd.metal").read_text()
