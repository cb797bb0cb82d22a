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
