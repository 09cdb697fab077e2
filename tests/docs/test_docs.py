"""The manual, checked as a reader meets it: the site builds strictly, the reference is generated from the code,
the README stays short, and every shell command a page shows is run here or says why it cannot be.

Every fenced shell block (bash, sh, shell, console) of README.md, docs/ and results/README.md carries a marker on the
line before it:

    <!-- docs-test: run -->                   run here, in page order, in a scratch folder (studies/, data/, .venv)
    <!-- docs-test: serve -->                 a server: started there, asked over HTTP, stopped
    <!-- docs-test: same PAGE -->             each of its lines is one that PAGE runs
    <!-- docs-test: plan -->                  hours of training: each `ablate run STUDY` is planned here instead
    <!-- docs-test: tests/X.py::NAME -->      that test runs it
    <!-- docs-test: needs gpu|cluster|network -->
    <!-- test-command -->                     README's test command, which .ci/run runs
"""

from __future__ import annotations

import ast
import os
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = sorted([REPO / "README.md", REPO / "results" / "README.md", *DOCS.rglob("*.md")])
SHELLS = ("bash", "sh", "shell", "console")
NEEDS = ("gpu", "cluster", "network")
README_LINES = 200


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, counted from 1
    language: str
    marker: str  # what follows `docs-test:`, or "test-command"; "" when the block has none
    text: str

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page (docs/results is a link to results/: read once, as results/)."""
    found, lines = [], page.read_text().split("\n")
    index = 0
    while index < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        before = lines[index - 1].strip() if index else ""
        marker = re.fullmatch(r"<!-- docs-test: (.+?) -->", before)
        said = marker.group(1) if marker else "test-command" if before == "<!-- test-command -->" else ""
        found.append(Block(page, index + 1, fence.group(1), said, "\n".join(lines[index + 1:end])))
        index = end + 1
    return found


def _pages() -> list[Path]:
    return [p for p in PAGES if not (p.is_relative_to(DOCS) and p.relative_to(DOCS).parts[0] == "results")]


def _shell(page: Path | None = None) -> list[Block]:
    return [b for p in ([page] if page else _pages()) for b in blocks(p) if b.language in SHELLS]


def test_the_manual_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("getting-started", "studies", "running", "reports", "trained-models", "reference/schema",
                 "reference/cli", "architecture", "results"):
        assert (site / page / "index.html").is_file(), f"{page} is not in the site"
    assert (site / "results" / "linearity-curves.png").is_file()  # the results' figures come with their pages


def test_the_generated_reference_is_current():
    generate = runpy.run_path(str(DOCS / "_generate.py"))
    for name in generate["BLOCKS"]:
        page, now, fresh = generate["regenerated"](name)
        assert now == fresh, f"{page} is stale: run python docs/_generate.py"


def test_the_cli_reference_lists_every_flag():
    from ablate.cli import _commands, build_parser, cli_markdown

    reference = cli_markdown()
    parser = build_parser(_commands())
    commands = next(a for a in parser._actions if a.dest == "command")
    for name, sub in commands.choices.items():
        assert f"### ablate {name}" in reference
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag not in ("--help", "--debug"):
                    assert f"`{flag}" in reference, f"ablate {name} {flag} is not in the reference"


def test_the_readme_is_short_and_keeps_its_test_command():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_LINES
    assert [b for b in blocks(REPO / "README.md") if b.marker == "test-command"], "README lost its test command"


def test_the_readme_table_is_the_committed_result():
    readme = (REPO / "README.md").read_text()
    results = (REPO / "results" / "linearity.md").read_text()
    table = results.split("\n\n| ", 1)[1].split("\n\n", 1)[0]  # the comparison table, the file's first
    for row in ("| " + table).splitlines():
        assert row in readme


def test_every_shell_block_says_how_it_is_tested():
    shown = _shell()
    assert len(shown) >= 10  # the parser finds the manual's blocks
    for block in shown:
        kind, _, rest = block.marker.partition(" ")
        assert kind in ("run", "serve", "same", "plan", "needs", "test-command") or kind.startswith("tests/"), (
            f"{block.where()}: a shell block needs a <!-- docs-test: … --> marker (see tests/docs/test_docs.py)")
        if kind == "needs":
            assert rest in NEEDS, f"{block.where()}: needs one of {NEEDS}, not {rest!r}"
        if kind.startswith("tests/"):
            _assert_test_exists(block, kind)
        if kind == "same":
            ran = {line for b in _shell(DOCS / rest) if b.marker in ("run", "serve") for line in _lines(b.text)}
            for line in _lines(block.text):
                assert line in ran, f"{block.where()}: {line!r} is not run by {rest}"


def _assert_test_exists(block: Block, target: str) -> None:
    path, _, name = target.partition("::")
    source = REPO / path
    assert source.is_file(), f"{block.where()}: no {path}"
    names = {node.name for node in ast.walk(ast.parse(source.read_text())) if isinstance(node, ast.FunctionDef)}
    assert name in names, f"{block.where()}: no test {name} in {path}"


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_every_whole_study_the_manual_shows_is_valid(tmp_path):
    """A TOML block with a [study] name is a study a reader may copy: it must pass validation."""
    from ablate.spec import load_study

    shown = [b for p in _pages() for b in blocks(p) if b.language == "toml" and re.search(r"^name = ", b.text, re.M)
             and "[study]" in b.text and ("[[stage]]" in b.text or "[[arm]]" in b.text)]
    assert shown, "the manual shows no whole study"
    for block in shown:
        study = tmp_path / f"{block.page.stem}-{block.line}.toml"
        study.write_text(block.text)
        tomllib.loads(block.text)
        load_study(study)


@pytest.mark.slow
def test_the_studies_behind_the_results_are_valid():
    """The results' commands train for hours: each study they run is planned instead."""
    ablate = Path(sys.executable).parent / "ablate"
    planned = [b for b in _shell() if b.marker == "plan"]
    assert planned
    for block in planned:
        for study in re.findall(r"ablate run (\S+\.toml)", block.text):
            done = subprocess.run([str(ablate), "plan", study], cwd=REPO, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{block.where()}: ablate plan {study}: {done.stderr}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _scratch(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder as a reader's checkout looks after the install: studies/, data/ and .venv (this environment)."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    shutil.copytree(REPO / "studies", folder / "studies")
    (folder / "data").symlink_to(REPO / "data")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "ABLATE_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # as `. .venv/bin/activate` does
    return folder, env


def _serve(block: Block, folder: Path, env: dict[str, str]) -> None:
    """Start the block's server on a free port, wait until it answers with the study's experiment, stop it."""
    port = _free_port()
    server = subprocess.Popen(["bash", "-c", block.text], cwd=folder, env={**env, "MLFLOW_PORT": str(port)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=50"
                answer = urllib.request.urlopen(url, timeout=5).read().decode()
                break
            except OSError:
                time.sleep(1)
        assert answer is not None, f"{block.where()}: {block.text!r} did not answer on port {port}"
        assert '"name": "linearity"' in answer or '"name":"linearity"' in answer, answer[:500]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.mark.slow
def test_getting_started_runs_as_written(tmp_path):
    """Every command of Getting started, in order, in a fresh checkout: the study trains, MLflow shows it, the report
    writes its figures, export its models."""
    folder, env = _scratch(tmp_path)
    page = DOCS / "getting-started.md"
    ran = [b for b in _shell(page) if b.marker in ("run", "serve")]
    assert any("ablate run" in b.text for b in ran)
    for block in ran:
        if block.marker == "serve":
            _serve(block, folder, env)
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{block.where()}: {block.text}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (folder / "results" / "linearity.md").is_file()
    assert (folder / "results" / "linearity-confusion.png").is_file()
    assert sorted(p.name for p in (folder / "models").iterdir()) == sorted(
        ["linear-mse", "linear-ce", "mlp", "mlp-dropout", "mlp-bn"])
