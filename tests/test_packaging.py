"""The README's set-up lines and CI stay in sync."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_COMMAND = 'pip install -e ".[test]" && pytest'
MAIN_COMMAND = 'pip install -e ".[examples]" && python examples/train_text.py'


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND in readme.splitlines()
    assert TEST_COMMAND in ci.splitlines()


def test_readme_main_command_names_an_existing_example():
    readme = (ROOT / "README.md").read_text()
    assert MAIN_COMMAND in readme.splitlines()
    assert (ROOT / "examples" / "train_text.py").is_file()


def _python_blocks():
    import ast
    import re

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    runnable = []
    for block in blocks:
        try:
            ast.parse(block)
        except SyntaxError:  # the API block lists signatures, not code
            continue
        runnable.append(block)
    return runnable


def test_readme_python_examples_run():
    import subprocess
    import sys

    blocks = _python_blocks()
    assert len(blocks) >= 2  # the quick start and the emulator example
    for block in blocks:
        # A fresh process each: the emulator example switches global state on.
        proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, f"README example failed:\n{block}\n{proc.stderr}"


def test_examples_extra_brings_the_emulator_compiler_off_a_mac():
    """After the README's first command, examples/compare_backends.py must be able to
    run the Metal kernels in the emulator on Linux: the extra brings ziglang's clang."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (zig,) = [req for req in extras["examples"] if req.startswith("ziglang")]
    assert "platform_system != 'Darwin'" in zig
