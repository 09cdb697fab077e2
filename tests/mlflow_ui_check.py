"""Does `mlflow ui` show ablate's runs, their numbers and their models? Run a tiny study, serve its store, look with
headless Chromium.

    python tests/mlflow_ui_check.py [--apply-tags] [--shots DIR] [--keep DIR] [--require plain|runs|models|all]

Steps: run a tiny real study (MNIST subset from data/) into a fresh SQLite store in a temporary folder (or use
--store), optionally set the experiment tags below (--apply-tags), start `mlflow server` on a free localhost port,
open three URLs in headless Chromium with a fresh profile (a first-time visitor: nothing in localStorage), save a
screenshot of each (--shots) and read the rendered DOM — its text, and the cells of its tables (AG Grid rows carry
a row-id, the run's or the logged model's id, and cells a col-id, the column's):

  plain   http://127.0.0.1:PORT/#/experiments/ID          what the experiment list links to
  runs    runs_url(...)                                   the link `ablate run` prints: the trial runs, by arm
  models  http://127.0.0.1:PORT/#/experiments/ID/models   the Models tab: the study's logged models

It prints what each page showed — per trial run, the test accuracy in its row; per logged model, likewise — and
exits 0 when the pages --require names show every trial run (every model) with its test accuracy, 1 otherwise, 2
when it could not check (no Chromium, the server did not start).

What MLflow 3.17's UI does (mlflow/server/js/src, checked against the bundled build):
* The experiment "kind" comes from the browser, not from the store: ExperimentKindUtils.useExperimentKind returns
  getExperimentKindForWorkflowType(workflowType) whenever shouldEnableWorkflowBasedNavigation() is true (it is
  hard-wired true in 3.17.2), and the experiment tag `mlflow.experimentKind` is read only when it is false.
  workflowType (common/contexts/WorkflowTypeContext.tsx) is the URL query `?workflowType=genai|machine_learning`,
  else localStorage `mlflow.workflowType_v1` (written by the sidebar's "GenAI / Model training" switch), else
  "genai". useNavigateToExperimentPageTab sends a genai experiment to the Overview tab, any other to Runs.
* The runs table's view (ExperimentPageUIState: selectedColumns, columnOrder, columnWidths, groupBy,
  groupsExpanded, …) lives in the browser: useInitializeUIState loads it from localStorage (per experiment), and a
  first visit gets createExperimentPageUIState's — the run name, Created, Dataset, Duration, Source, Models, every
  metric and param behind "Columns". No URL parameter sets columns (the URL holds only the search facets: searchFilter,
  orderByKey, orderByAsc, startTime, lifecycleFilter, datasetsFilter, modelVersionFilter). What the store can set is
  a shared view (useSharedExperimentViewState): the URL `viewStateShareKey=KEY` applies the experiment tag
  `mlflow.sharedViewState.KEY` — JSON (or deflate-compressed JSON) of UI state fields and search facets. ablate
  writes one (ablate.tracking's _view): the key metrics as the first columns, the trial runs grouped by the `stage`
  tag, every arm expanded, sorted by test accuracy. Tried and seen here: with a sort in the URL as well
  (orderByKey=…, which the earlier link had), the shared view is not applied at all; columnOrder moves the metric
  columns next to the run's name (otherwise they come after Models, off screen at 1600 px); groupsExpanded keys are
  `tag.stage.<arm>`, and an arm missing from it stays collapsed (its row still shows the arm's mean).
* Without a view the table nests child runs under their parent (collapsed) while it is sorted by start time with no
  search filter (nestChildren = (!orderByKey && !searchFilter) || orderByKey === 'attributes.start_time'); grouping
  or the view's filter `tags.role != 'parent'` lists the trial runs themselves.
* The Models tab (#/experiments/ID/models) lists the experiment's logged models (search_logged_models: ablate's
  since it logs them, ablate.tracking's _logged), with Source run, Registered models, Dataset, then one column per
  metric and per param; its state (columns, sort) is React state only: neither the URL nor the store sets it. Its
  metric columns start past the attributes (about 1,900 px), so this check opens it in a window wide enough to see
  them; a reader scrolls right, or opens "Chart view".
"""

from __future__ import annotations

import argparse
import html
import html.parser
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

if str(REPO) not in sys.path:  # run as a script: `python tests/mlflow_ui_check.py`
    sys.path.insert(0, str(REPO))
from tests._serving import MlflowServer, run_bounded  # noqa: E402
from tests.conftest import TINY_STUDY as _TESTS_TINY_STUDY  # noqa: E402

TINY_STUDY = _TESTS_TINY_STUDY.replace('name = "tiny"', 'name = "uicheck"')

# The tags --apply-tags sets on the experiment (ablate sets them at creation, ablate.tracking.EXPERIMENT_KIND; the
# flag re-applies them to a store made by something else). MLflow 3.17.2's UI ignores this one for choosing the
# landing page (see the module docstring); it is the value the UI itself writes when a user marks an experiment
# "Machine learning", and older 3.x UIs (workflow-based navigation off) do read it.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TEST_ACCURACY = "test_accuracy"
RUNS_CELL = "metrics.`test_accuracy`"  # the runs table's column id of a metric (makeCanonicalSortKey)
MODELS_CELL = 'metrics.{"metricKey":"test_accuracy"'  # the Models tab's starts so (a JSON key, with its dataset)
WINDOWS = {"plain": (1600, 1000), "runs": (1600, 1000), "models": (2600, 1000)}


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def plain_url(base: str, experiment_id: str) -> str:
    """The link the experiment list (#/experiments) shows for an experiment."""
    return f"{base}/#/experiments/{experiment_id}"


def runs_url(base: str, experiment_id: str) -> str:
    """The URL `ablate run` prints at its end (ablate.tracking.runs_url), served from `base`."""
    from ablate.tracking import runs_url as ablate_runs_url

    return ablate_runs_url(experiment_id, base)


def models_url(base: str, experiment_id: str) -> str:
    """The experiment's Models tab (ablate.tracking.models_url)."""
    from ablate.tracking import models_url as ablate_models_url

    return ablate_models_url(experiment_id, base)


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
    result = run_bounded(
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
    accuracy: dict[str, tuple[str, float]] = field(default_factory=dict)  # trial run id → (its name, test accuracy)
    models: dict[str, tuple[str, float]] = field(default_factory=dict)  # logged model id → (its run's name, accuracy)


def read_store(store: str, experiment: str) -> StoreInfo:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise RuntimeError(f"no experiment {experiment!r} in {store}")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    trials = sorted(r.info.run_name for r in runs if "mlflow.parentRunId" in r.data.tags)
    parents = sorted(r.info.run_name for r in runs if "mlflow.parentRunId" not in r.data.tags)
    accuracy = {r.info.run_id: (r.info.run_name, r.data.metrics[TEST_ACCURACY]) for r in runs
                if TEST_ACCURACY in r.data.metrics}
    names = {r.info.run_id: r.info.run_name for r in runs}
    models = {m.model_id: (names.get(m.source_run_id, "?"), _metric(m, TEST_ACCURACY))
              for m in client.search_logged_models([exp.experiment_id])}
    return StoreInfo(exp.experiment_id, dict(exp.tags), trials, parents, accuracy, models)


def _metric(model, key: str) -> float:
    return next((metric.value for metric in model.metrics or [] if metric.key == key), math.nan)


def apply_experiment_tags(store: str, experiment_id: str, tags: dict[str, str] = EXPERIMENT_TAGS) -> None:
    """Stand-in for ablate setting the tags itself at experiment creation; delete once it does."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    for key, value in tags.items():
        client.set_experiment_tag(experiment_id, key, value)


# --------------------------------------------------------------------------------------------------------------------
# Headless Chromium

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Page(html.parser.HTMLParser):
    """A dumped DOM's visible text, its <title>, and the text of its table cells: {row-id: {col-id: text}}."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: str | None = None
        self.cells: dict[str, dict[str, str]] = {}
        self._skip = 0
        self._in_title = False
        self._stack: list[tuple[str, str | None, str | None]] = []  # open elements: (tag, row-id, col-id)

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "noscript", "svg"):
            self._skip += 1
        elif tag == "title" and self.title is None and not self._skip:
            self._in_title, self.title = True, ""
        if tag not in _VOID:
            found = dict(attrs)
            column = found.get("col-id")  # the Models tab's are JSON, HTML-escaped twice over
            self._stack.append((tag, found.get("row-id"), html.unescape(column) if column else None))

    def handle_endtag(self, tag):
        if tag in ("script", "style", "noscript", "svg") and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False
        for depth in range(len(self._stack) - 1, -1, -1):  # the nearest open one: a stray end tag closes nothing
            if self._stack[depth][0] == tag:
                del self._stack[depth:]
                break

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip and data.strip():
            self.parts.append(data.strip())
            row = next((r for _, r, _ in reversed(self._stack) if r), None)
            column = next((c for _, _, c in reversed(self._stack) if c), None)
            if row and column:
                cell = self.cells.setdefault(row, {})
                cell[column] = f"{cell.get(column, '')} {data.strip()}".strip()


@dataclass
class PageCheck:
    name: str
    url: str
    title: str = ""
    view: str = "unknown"  # runs-table | models-table | genai-overview | loading | other
    seen: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    cells: dict[str, dict[str, str]] = field(default_factory=dict)
    screenshot: str | None = None
    excerpt: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.seen) and not self.missing

    def cell(self, row_id_end: str, column_start: str) -> str | None:
        """The text of the cell whose row's id ends with `row_id_end` (a run id: grouped rows are `group.run`) and
        whose column's id starts with `column_start`; None where the page shows no such cell."""
        for row, columns in self.cells.items():
            if row.endswith(row_id_end):
                for column, text in columns.items():
                    if column.startswith(column_start):
                        return text
        return None

    def describe(self) -> str:
        lines = [
            f"[{'ok' if self.ok else 'NO'}] {self.name}: {self.url}",
            f"     title: {self.title!r}   view: {self.view}",
            f"     expected and visible: {self.seen or 'none'}"
            + (f"   missing: {self.missing}" if self.missing else ""),
        ]
        if self.screenshot:
            lines.append(f"     screenshot: {self.screenshot}")
        if self.error:
            lines.append(f"     error: {self.error}")
        lines.append(f"     page text: {self.excerpt}")
        return "\n".join(lines)


def _chromium_cmd(chromium: str, profile: Path, budget_ms: int, window: tuple[int, int] = (1600, 1000)) -> list[str]:
    return [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--window-size={window[0]},{window[1]}",
        f"--virtual-time-budget={budget_ms}",
        f"--user-data-dir={profile}",
    ]


def _classify(title: str, text: str) -> str:
    if title.startswith("Overview") or ("Token Usage" in text and "Traces" in text):
        return "genai-overview"
    if title.startswith("Runs") or "matching runs" in text:
        return "runs-table"
    if title.startswith("Logged Models") or "Model attributes" in text:
        return "models-table"
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
    window: tuple[int, int] = (1600, 1000),
) -> PageCheck:
    """Open url in a fresh headless profile, read the rendered DOM (text and table cells: `expected` are texts it
    should hold), and save a screenshot."""
    check = PageCheck(name, url)
    for _attempt in range(attempts):
        profile = Path(tempfile.mkdtemp(prefix=f"chromium-{name}-", dir=workdir))
        try:
            result = run_bounded([*_chromium_cmd(chromium, profile, budget_ms, window), "--dump-dom", url], timeout)
        except subprocess.TimeoutExpired:
            check.error = f"chromium --dump-dom took over {timeout:.0f} s"
            continue
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        parser = _Page()
        parser.feed(result.stdout.decode(errors="replace"))
        text = " ".join(parser.parts)
        check.title, check.view = (parser.title or "").strip(), _classify((parser.title or "").strip(), text)
        check.seen = [item for item in expected if item in text]
        check.missing = [item for item in expected if item not in text]
        check.cells, check.excerpt = parser.cells, text[:400]
        check.error = (
            None if result.returncode == 0 else f"chromium exited {result.returncode}: {result.stderr[-300:]!r}"
        )
        if check.view != "loading" and not check.missing:
            break
        budget_ms *= 2  # the app had not rendered (all of it) yet: give it more (virtual) time
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        profile = Path(tempfile.mkdtemp(prefix=f"chromium-{name}-shot-", dir=workdir))
        try:
            run_bounded([*_chromium_cmd(chromium, profile, budget_ms, window), f"--screenshot={screenshot}", url],
                        timeout)
            check.screenshot = str(screenshot) if screenshot.exists() else None
        except subprocess.TimeoutExpired:
            check.error = (check.error or "") + f" screenshot took over {timeout:.0f} s"
        finally:
            shutil.rmtree(profile, ignore_errors=True)
    return check


# --------------------------------------------------------------------------------------------------------------------


def shown_number(text: str | None) -> float:
    """The number a table cell shows (the UI rounds: 0.7180001 shows as 0.718), NaN where it shows none."""
    try:
        return float((text or "").split()[0])
    except (ValueError, IndexError):
        return math.nan


@dataclass
class UiReport:
    store: str
    info: StoreInfo
    tags_applied: bool
    pages: dict[str, PageCheck]

    def accuracies_shown(self) -> dict[str, tuple[float, float]]:
        """Per trial run (its name): (its test accuracy, the number its row of the runs page shows for it)."""
        page = self.pages["runs"]
        return {name: (value, shown_number(page.cell(run_id, RUNS_CELL)))
                for run_id, (name, value) in self.info.accuracy.items()}

    def models_shown(self) -> dict[str, tuple[float, float]]:
        """Per logged model (its id): (its test accuracy, the number its row of the Models tab shows for it)."""
        page = self.pages["models"]
        return {model_id: (value, shown_number(page.cell(model_id, MODELS_CELL)))
                for model_id, (_, value) in self.info.models.items()}

    def ok(self, require: str = "runs") -> bool:
        names = ["plain", "runs", "models"] if require == "all" else [require]
        numbers = {"runs": self.accuracies_shown, "models": self.models_shown}
        return all(self.pages[name].ok and _agree(numbers[name]() if name in numbers else {}) for name in names)

    def describe(self) -> str:
        kind = self.info.experiment_tags.get("mlflow.experimentKind", "<unset>")
        origin = "set by --apply-tags" if self.tags_applied else "as ablate left it"
        head = [
            f"store: {self.store}",
            f"experiment {self.info.experiment_id}: mlflow.experimentKind = {kind}  ({origin})",
            f"trial runs: {self.info.trial_names}   parent runs: {self.info.parent_names}",
            f"test accuracy per trial run (stored, shown on the runs page): {self.accuracies_shown()}",
            f"test accuracy per logged model (stored, shown on the Models tab): {self.models_shown()}",
        ]
        return "\n".join(head + [page.describe() for page in self.pages.values()])


def _agree(pairs: dict[str, tuple[float, float]], places: int = 3) -> bool:
    """Every stored number is shown, as the UI rounds it."""
    return bool(pairs) and all(abs(stored - shown) <= 0.6 * 10**-places for stored, shown in pairs.values())


def check_ui(
    apply_tags: bool = False,
    store: str | None = None,
    experiment: str | None = None,
    shots: Path | None = None,
    workdir: Path | None = None,
    chromium: str | None = None,
    study_timeout: float = 600.0,
    page_timeout: float = 90.0,
) -> UiReport:
    """Run the tiny study (unless store is given), serve the store, and check the three URLs (screenshots to
    shots/<page>.png). Everything it starts is stopped before it returns; files go to workdir (a temporary folder,
    removed, when None)."""
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
            urls = {"plain": plain_url(server.base, info.experiment_id),
                    "runs": runs_url(server.base, info.experiment_id),
                    "models": models_url(server.base, info.experiment_id)}
            expected = {"plain": info.trial_names, "runs": info.trial_names,
                        "models": sorted({run for run, _ in info.models.values()})}
            pages = {name: check_page(chromium, name, url, expected[name], folder,
                                      shots / f"{name}.png" if shots else None, page_timeout, window=WINDOWS[name])
                     for name, url in urls.items()}
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
    parser.add_argument("--shots", type=Path, metavar="DIR", help="save a PNG of each page there (plain, runs, models)")
    parser.add_argument(
        "--require",
        choices=["plain", "runs", "models", "all"],
        default="runs",
        help="which page must show what it should for exit status 0 (default: runs, the link `ablate run` prints; "
             "the plain experiment URL opens on the GenAI overview in MLflow 3.17)",
    )
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it (store, server log)")
    parser.add_argument("--page-timeout", type=float, default=90.0, help="seconds per Chromium call (default 90)")
    args = parser.parse_args(argv)
    if args.store and not args.experiment:
        parser.error("--store needs --experiment")
    try:
        report = check_ui(args.apply_tags, args.store, args.experiment, args.shots, args.keep,
                          page_timeout=args.page_timeout)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"could not check: {exc}", file=sys.stderr)
        return 2
    print(report.describe())
    ok = report.ok(args.require)
    print(f"{'PASS' if ok else 'FAIL'}: {args.require} page(s) {'show' if ok else 'do not show'} what they should")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
