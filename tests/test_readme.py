"""The README's Python snippets run as written, in the folder `make demo` leaves behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TINY

README = (REPO / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, re.S)
#: What each snippet prints, as its comments say (in README order).
PRINTS = ["torch.uint8 (1, 8, 8) 3", "[20, 10] [0, 10] 40", "torch.float32 (8, 8, 1)"]


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shaped like the one after `make demo`: runs/00000-digits, a 10-class 8x8 digits run
    (tiny networks, a fraction of a kimg: the snippets need its shape, not its quality)."""
    from augment.config import load_config
    from augment.train import train

    folder = tmp_path_factory.mktemp("demo")
    overrides = [o for o in TINY if not o.startswith("data.classes")]
    cfg = load_config(REPO / "configs" / "digits.yaml", [*overrides, f"output.root={folder / 'runs'}"])
    train(cfg, out=folder / "runs" / "00000-digits", progress=False)
    return folder


def test_the_readme_has_the_three_augmenter_snippets() -> None:
    assert len(SNIPPETS) == len(PRINTS) == 3
    for code, printed in zip(SNIPPETS, PRINTS, strict=True):
        assert printed in code  # the comment that says what it prints


#: Runs each snippet as its own ``__main__`` module, one after another in one interpreter (torch is
#: imported once, not three times), each output after a marker line; a failing snippet ends the run.
RUNNER = """
import runpy, sys
for i, path in enumerate(sys.argv[1:]):
    print(f"=== snippet {i}", flush=True)
    runpy.run_path(path, run_name="__main__")
    sys.stdout.flush()
"""


@pytest.fixture(scope="module")
def snippet_outputs(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """What each README snippet printed, run as written in the demo folder."""
    files = tmp_path_factory.mktemp("snippets")
    paths = []
    for i, code in enumerate(SNIPPETS):
        paths.append(files / f"snippet_{i}.py")
        paths[-1].write_text(code)
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, *map(str, paths)], cwd=demo_folder, capture_output=True, text=True, timeout=300
    )
    parts = re.split(r"^=== snippet \d+\n", out.stdout, flags=re.M)[1:]
    assert out.returncode == 0, f"snippet {len(parts) - 1} failed:\n{out.stderr[-2000:]}"
    return parts


@pytest.mark.parametrize("index", range(3))
def test_a_readme_snippet_runs_as_written(snippet_outputs: list[str], index: int) -> None:
    assert snippet_outputs[index].strip().splitlines()[-1] == PRINTS[index]


def test_the_readme_stays_a_five_minute_read() -> None:
    assert len(README.splitlines()) < 200
    for link in re.findall(r"\]\(((?:docs|benchmarks|examples)/[^)#]+)\)", README):
        assert (REPO / link).exists(), link


def test_every_command_and_option_the_readme_lists_exists() -> None:
    """The README's command block against the real CLI: each command's --help names each option shown."""
    from typer.testing import CliRunner

    from flows.cli import app

    blocks = [body for _, body in re.findall(r"^```(\w*)\n(.*?)^```", README, re.M | re.S)]
    block = next(b for b in blocks if b.startswith("augment train"))
    commands: dict[str, set[str]] = {}
    current = None
    for line in block.splitlines():
        code = line.split("#", 1)[0]
        words = code.split()
        if words[:1] == ["augment"]:
            current = words[1]
            commands[current] = set()
        if current is not None:
            commands[current] |= set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*|-q)\b", code))
    assert set(commands) == {
        *("train", "generate", "evaluate", "run", "inspect-data", "teacher", "serve", "ui", "compare", "spread")
    }
    runner = CliRunner()
    for command, options in commands.items():
        res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, (command, res.output)
        for option in options:
            assert option in res.output, f"README: `augment {command} {option}` is not an option of the command"
