"""Does `mlflow ui` show ablate's runs? Run a tiny study, serve its store, look with headless Chromium.

    python tests/mlflow_ui_check.py [--apply-tags] [--screenshot PNG] [--runs-screenshot PNG] [--keep]

Steps: run a tiny real study (MNIST subset from data/) into a fresh SQLite store in a temporary folder (or use
--store), optionally set the experiment tags below (--apply-tags), start `mlflow server` on a free localhost port,
open two URLs in headless Chromium with a fresh profile (a first-time visitor: nothing in localStorage), save a
screenshot of each and read the rendered DOM:

  plain  http://127.0.0.1:PORT/#/experiments/ID   what the experiment list links to
  runs   runs_url(...)                            the runs table, ablate's trials listed flat

It prints what each page showed and exits 0 when the trial runs (e.g. linear-s0) are visible on the page(s) that
--require names (default: runs), 1 otherwise, 2 when it could not check (no Chromium, server did not start).

What MLflow 3.17's UI does (mlflow/server/js/src, checked against the bundled build):
* The experiment "kind" comes from the browser, not from the store: ExperimentKindUtils.useExperimentKind returns
  getExperimentKindForWorkflowType(workflowType) whenever shouldEnableWorkflowBasedNavigation() is true (it is
  hard-wired true in 3.17.2), and the experiment tag `mlflow.experimentKind` is read only when it is false.
  workflowType (common/contexts/WorkflowTypeContext.tsx) is the URL query `?workflowType=genai|machine_learning`,
  else localStorage `mlflow.workflowType_v1` (written by the sidebar's "GenAI / Model training" switch), else
  "genai". useNavigateToExperimentPageTab sends a genai experiment to the Overview tab, any other to Runs.
* The runs table nests child runs under their parent (collapsed) while it is sorted by start time with no search
  filter (nestChildren = (!orderByKey && !searchFilter) || orderByKey === 'attributes.start_time'); sorting by a
  metric (URL `orderByKey=metrics.\\`test_accuracy\\``) lists every run flat, and the chart view then has the
  trials' metrics. The only store-side knob for expansion is expandedRunsViewStateInitializer: parents of runs
  tagged `mlflow.runType=evaluation` start expanded, which also labels the trials "Eval" runs (not used here).
"""

from __future__ import annotations

import argparse
import html.parser
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parents[1]

if str(REPO) not in sys.path:  # run as a script: `python tests/mlflow_ui_check.py`
    sys.path.insert(0, str(REPO))
from tests.conftest import TINY_STUDY as _TESTS_TINY_STUDY  # noqa: E402

TINY_STUDY = _TESTS_TINY_STUDY.replace('name = "tiny"', 'name = "uicheck"')

# The tags --apply-tags sets on the experiment (ablate sets them at creation, ablate.tracking.EXPERIMENT_KIND; the
# flag re-applies them to a store made by something else). MLflow 3.17.2's UI ignores this one for choosing the
# landing page (see the module docstring); it is the value the UI itself writes when a user marks an experiment
# "Machine learning", and older 3.x UIs (workflow-based navigation off) do read it.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def plain_url(base: str, experiment_id: str) -> str:
    """The link the experiment list (#/experiments) shows for an experiment."""
    return f"{base}/#/experiments/{experiment_id}"


def runs_url(base: str, experiment_id: str, metric: str = "test_accuracy") -> str:
    """The URL `ablate run` prints at its end (ablate.tracking.runs_url), served from `base`."""
    from ablate.tracking import runs_url as ablate_runs_url

    return ablate_runs_url(experiment_id, base, metric)


# --------------------------------------------------------------------------------------------------------------------
# Processes, always bounded and always stopped


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a process started with start_new_session=True, and its children, by its process (group) id."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _run_bounded(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run with a timeout that also ends the command's children (Chromium forks several)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc, grace=2.0)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout, out, err) from None
    finally:
        try:  # helpers the command left behind in its process group (the group outlives its leader)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` on a free localhost port, in its own process group; a context manager that always stops it."""

    def __init__(self, store: str, folder: Path, start_timeout: float = 120.0):
        self.store, self.folder, self.start_timeout = store, folder, start_timeout
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / "mlflow-server.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.store,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}):\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not answer within {self.start_timeout:.0f} s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
            try:  # uvicorn workers left behind, if the `mlflow server` process went first
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------------------------
# The study and the store


def run_tiny_study(folder: Path, timeout: float = 600.0) -> tuple[str, str]:
    """Run TINY_STUDY with ablate into folder/mlflow.db; return (tracking URI, experiment name)."""
    study = folder / "uicheck.toml"
    study.write_text(textwrap.dedent(TINY_STUDY))
    store = f"sqlite:///{folder / 'mlflow.db'}"
    env = dict(os.environ)
    if (REPO / "data").is_dir():
        env.setdefault("ABLATE_DATA_DIR", str(REPO / "data"))  # the committed MNIST files: no download
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = _run_bounded(
        [sys.executable, "-m", "ablate", "run", str(study), "--tracking-uri", store], timeout, cwd=folder, env=env
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"ablate run failed ({result.returncode}):\n{result.stdout.decode()}\n{result.stderr.decode()}"
        )
    return store, "uicheck"


@dataclass
class StoreInfo:
    experiment_id: str
    experiment_tags: dict[str, str]
    trial_names: list[str]  # child runs (they carry mlflow.parentRunId)
    parent_names: list[str]


def read_store(store: str, experiment: str) -> StoreInfo:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise RuntimeError(f"no experiment {experiment!r} in {store}")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    trials = sorted(r.info.run_name for r in runs if "mlflow.parentRunId" in r.data.tags)
    parents = sorted(r.info.run_name for r in runs if "mlflow.parentRunId" not in r.data.tags)
    return StoreInfo(exp.experiment_id, dict(exp.tags), trials, parents)


def apply_experiment_tags(store: str, experiment_id: str, tags: dict[str, str] = EXPERIMENT_TAGS) -> None:
    """Stand-in for ablate setting the tags itself at experiment creation; delete once it does."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    for key, value in tags.items():
        client.set_experiment_tag(experiment_id, key, value)


# --------------------------------------------------------------------------------------------------------------------
# Headless Chromium


class _Text(html.parser.HTMLParser):
    """Visible text and the document <title> of a dumped DOM."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: str | None = None
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "noscript", "svg"):
            self._skip += 1
        elif tag == "title" and self.title is None and not self._skip:
            self._in_title, self.title = True, ""

    def handle_endtag(self, tag):
        if tag in ("script", "style", "noscript", "svg") and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip and data.strip():
            self.parts.append(data.strip())


@dataclass
class PageCheck:
    name: str
    url: str
    title: str = ""
    view: str = "unknown"  # runs-table | genai-overview | loading | other
    seen: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    screenshot: str | None = None
    excerpt: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.seen) and not self.missing

    def describe(self) -> str:
        lines = [
            f"[{'ok' if self.ok else 'NO'}] {self.name}: {self.url}",
            f"     title: {self.title!r}   view: {self.view}",
            f"     trial runs visible: {self.seen or 'none'}" + (f"   missing: {self.missing}" if self.missing else ""),
        ]
        if self.screenshot:
            lines.append(f"     screenshot: {self.screenshot}")
        if self.error:
            lines.append(f"     error: {self.error}")
        lines.append(f"     page text: {self.excerpt}")
        return "\n".join(lines)


def _chromium_cmd(chromium: str, profile: Path, budget_ms: int) -> list[str]:
    return [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--window-size=1600,1000",
        f"--virtual-time-budget={budget_ms}",
        f"--user-data-dir={profile}",
    ]


def _classify(title: str, text: str) -> str:
    if title.startswith("Overview") or ("Token Usage" in text and "Traces" in text):
        return "genai-overview"
    if title.startswith("Runs") or "matching runs" in text:
        return "runs-table"
    if title.strip() in ("", "MLflow") and "Experiments" not in text:
        return "loading"
    return "other"


def check_page(
    chromium: str,
    name: str,
    url: str,
    expected: list[str],
    workdir: Path,
    screenshot: Path | None,
    timeout: float = 90.0,
    budget_ms: int = 15000,
    attempts: int = 3,
) -> PageCheck:
    """Open url in a fresh headless profile, read the rendered DOM, and save a screenshot."""
    check = PageCheck(name, url)
    for _attempt in range(attempts):
        profile = Path(tempfile.mkdtemp(prefix=f"chromium-{name}-", dir=workdir))
        try:
            result = _run_bounded([*_chromium_cmd(chromium, profile, budget_ms), "--dump-dom", url], timeout)
        except subprocess.TimeoutExpired:
            check.error = f"chromium --dump-dom took over {timeout:.0f} s"
            continue
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        parser = _Text()
        parser.feed(result.stdout.decode(errors="replace"))
        text = " ".join(parser.parts)
        check.title, check.view = (parser.title or "").strip(), _classify((parser.title or "").strip(), text)
        check.seen = [run for run in expected if run in text]
        check.missing = [run for run in expected if run not in text]
        check.excerpt = text[:400]
        check.error = (
            None if result.returncode == 0 else f"chromium exited {result.returncode}: {result.stderr[-300:]!r}"
        )
        if check.view != "loading":
            break
        budget_ms *= 2  # the app had not rendered yet: give it more (virtual) time
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        profile = Path(tempfile.mkdtemp(prefix=f"chromium-{name}-shot-", dir=workdir))
        try:
            _run_bounded([*_chromium_cmd(chromium, profile, budget_ms), f"--screenshot={screenshot}", url], timeout)
            check.screenshot = str(screenshot) if screenshot.exists() else None
        except subprocess.TimeoutExpired:
            check.error = (check.error or "") + f" screenshot took over {timeout:.0f} s"
        finally:
            shutil.rmtree(profile, ignore_errors=True)
    return check


# --------------------------------------------------------------------------------------------------------------------


@dataclass
class UiReport:
    store: str
    info: StoreInfo
    tags_applied: bool
    pages: dict[str, PageCheck]

    def ok(self, require: str = "runs") -> bool:
        names = ["plain", "runs"] if require == "both" else [require]
        return all(self.pages[name].ok for name in names)

    def describe(self) -> str:
        kind = self.info.experiment_tags.get("mlflow.experimentKind", "<unset>")
        origin = "set by --apply-tags" if self.tags_applied else "as ablate left it"
        head = [
            f"store: {self.store}",
            f"experiment {self.info.experiment_id}: mlflow.experimentKind = {kind}  ({origin})",
            f"trial runs: {self.info.trial_names}   parent runs: {self.info.parent_names}",
        ]
        return "\n".join(head + [page.describe() for page in self.pages.values()])


def check_ui(
    apply_tags: bool = False,
    store: str | None = None,
    experiment: str | None = None,
    screenshot: Path | None = None,
    runs_screenshot: Path | None = None,
    workdir: Path | None = None,
    chromium: str | None = None,
    study_timeout: float = 600.0,
    page_timeout: float = 90.0,
) -> UiReport:
    """Run the tiny study (unless store is given), serve the store, and check both URLs. Everything it starts is
    stopped before it returns; files go to workdir (a temporary folder, removed, when None)."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError(f"no Chromium on PATH (tried {', '.join(CHROMIUM_NAMES)}); apt-get install -y chromium")
    own_dir = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="ablate-ui-check-")) if own_dir else Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if store is None:
            store, experiment = run_tiny_study(folder, study_timeout)
        info = read_store(store, experiment or "uicheck")
        if apply_tags:
            apply_experiment_tags(store, info.experiment_id)
            info = read_store(store, experiment or "uicheck")
        with MlflowServer(store, folder) as server:
            pages = {
                "plain": check_page(
                    chromium,
                    "plain",
                    plain_url(server.base, info.experiment_id),
                    info.trial_names,
                    folder,
                    screenshot,
                    page_timeout,
                ),
                "runs": check_page(
                    chromium,
                    "runs",
                    runs_url(server.base, info.experiment_id),
                    info.trial_names,
                    folder,
                    runs_screenshot,
                    page_timeout,
                ),
            }
        return UiReport(store, info, apply_tags, pages)
    finally:
        if own_dir:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apply-tags", action="store_true", help=f"set {EXPERIMENT_TAGS} on the experiment first")
    parser.add_argument(
        "--store", help="check this tracking URI instead of running the tiny study (needs --experiment)"
    )
    parser.add_argument("--experiment", help="experiment name in --store")
    parser.add_argument("--screenshot", type=Path, help="PNG of the plain experiment URL")
    parser.add_argument("--runs-screenshot", type=Path, help="PNG of the runs-table URL")
    parser.add_argument(
        "--require",
        choices=["plain", "runs", "both"],
        default="runs",
        help="which URL must show the trial runs for exit status 0 (default: runs, the link `ablate run` prints; the "
             "plain experiment URL opens on the GenAI overview in MLflow 3.17)",
    )
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it (store, server log)")
    parser.add_argument("--page-timeout", type=float, default=90.0, help="seconds per Chromium call (default 90)")
    args = parser.parse_args(argv)
    if args.store and not args.experiment:
        parser.error("--store needs --experiment")
    try:
        report = check_ui(
            args.apply_tags,
            args.store,
            args.experiment,
            args.screenshot,
            args.runs_screenshot,
            args.keep,
            page_timeout=args.page_timeout,
        )
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"could not check: {exc}", file=sys.stderr)
        return 2
    print(report.describe())
    ok = report.ok(args.require)
    print(f"{'PASS' if ok else 'FAIL'}: trial runs {'visible' if ok else 'not visible'} on {args.require} URL(s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
