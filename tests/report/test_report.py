"""Report statistics (against hand-worked numbers), robustness to failed/running/duplicate runs, formats, figures."""

from __future__ import annotations

import io
import json
import math

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ablate import datasets
from ablate.cli import main
from ablate.report import holm, mean_interval, paired_difference
from tests.conftest import DATA_DIR, TINY_STUDY


def test_interval_and_paired_test_match_a_hand_worked_example():
    # values 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 → half-width 4.302653 / √3 = 2.484138
    low, high = mean_interval(pd.Series([1.0, 2.0, 3.0]))
    assert (low, high) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-5)
    # paired differences 1, 2, 2: mean 5/3, sd 0.57735, t = 5.0 on 2 df → two-sided p = 0.037750
    arm = pd.Series([1.0, 2.0, 3.0], index=[0, 1, 2])
    base = pd.Series([0.0, 0.0, 1.0], index=[0, 1, 2])
    delta, p, pairs = paired_difference(arm, base)
    assert delta == pytest.approx(5 / 3) and p == pytest.approx(0.037750, abs=1e-5) and pairs == 3
    # only the seeds both ran are paired; one pair has no p-value; constant differences neither
    assert paired_difference(arm, pd.Series([0.0], index=[1]))[1:] == (pytest.approx(math.nan, nan_ok=True), 1)
    assert math.isnan(paired_difference(arm, arm - 1)[1])
    assert all(math.isnan(v) for v in mean_interval(pd.Series([5.0])))


def test_holm_correction():
    adjusted = holm([0.01, 0.04, 0.03, math.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The tiny study run once, then a duplicate finished run, a failed one and one left RUNNING added by hand."""
    folder = tmp_path_factory.mktemp("report")
    study = folder / "tiny.toml"
    study.write_text(TINY_STUDY.replace("seeds = [0, 1]", "seeds = [0, 1, 2]")
                     .replace('name = "mlp"', 'name = "mlp"\ndescription = "one hidden layer of 32 units"'))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    assert main(["run", str(study), "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    first = client.search_runs([experiment], "tags.role = 'trial' and tags.stage = 'mlp' and tags.seed = '0'")[0]
    for status, accuracy in (("FINISHED", 0.99), ("FAILED", 0.0), ("RUNNING", 0.0)):
        run = client.create_run(experiment, tags=first.data.tags)
        client.log_metric(run.info.run_id, "test_accuracy", accuracy)
        client.log_metric(run.info.run_id, "train_seconds", 1.0)
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
    return uri, folder


@pytest.mark.slow
def test_report_counts_the_latest_finished_run_and_leaves_out_the_rest(store, capsys):
    uri, folder = store
    assert main(["report", "--tracking-uri", uri, "--study", "tiny", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    mlp = table[table["stage"] == "mlp"].iloc[0]
    assert mlp["n"] == 3  # the duplicate replaced its twin instead of counting twice
    assert mlp["test_accuracy_mean"] > 70  # seed 0's latest finished run (99 %) counts, not the first (~60 %)
    assert main(["report", "--tracking-uri", uri, "--study", "tiny"]) == 0
    text = capsys.readouterr().out
    assert "Left out of the statistics: 1 FAILED, 1 RUNNING run(s)." in text
    assert "95% CI" in text and "p (Holm)" in text and "| Params" in text and "| MACs" not in text  # the default set
    assert "- **mlp**: one hidden layer of 32 units" in text and "- **linear**" not in text  # the file's descriptions
    table_rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert max(map(len, table_rows)) < 170  # before: 17 columns, ~330 characters a row; the verdict column adds ~25
    assert main(["report", "--tracking-uri", uri, "--study", "tiny", "--columns", "all"]) == 0
    text = capsys.readouterr().out
    assert "MACs" in text and "Samples/s" in text and "Worker peak RSS (MB)" in text and "Peak mem" not in text
    assert main(["report", "--tracking-uri", uri, "--study", "tiny", "--columns", "n,metric,macs"]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| "))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Stage", "n", "Test acc (%)", "MACs"]
    assert main(["report", "--tracking-uri", uri, "--columns", "acc"]) == 2
    assert "unknown column 'acc'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_terminal_table_fits_100_columns(store):
    from rich.console import Console

    from ablate.console import print_report_table
    from ablate.report import build

    uri, _ = store
    console = Console(width=100, record=True, highlight=False)
    print_report_table(console, build(uri, "tiny")[0])
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 100 and "mlp" in text and "…" not in text


@pytest.mark.slow
def test_every_format_parses_back_and_latex_is_booktabs(store, capsys):
    uri, folder = store
    assert main(["report", "--tracking-uri", uri, "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {"ci_low", "ci_high", "delta_vs_baseline", "p_value", "p_holm", "significant", "macs"} <= set(records[0])
    assert main(["report", "--tracking-uri", uri, "--out", str(folder / "t.tex")]) == 0
    latex = (folder / "t.tex").read_text()
    for needle in (r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule", r"$\pm$", r"\%"):
        assert needle in latex
    assert "±" not in latex and "→" not in latex
    assert main(["report", "--tracking-uri", uri, "--study", "tiny", "--metric", "test_loss", "--baseline", "mlp"]) == 0
    out = capsys.readouterr().out
    assert "| Test loss" in out and "Δ vs mlp" in out
    assert main(["report", "--tracking-uri", uri, "--study", "tiny", "--baseline", "mpl"]) == 2
    assert "did you mean 'mlp'" in capsys.readouterr().err


@pytest.mark.slow
def test_figures_are_non_blank_pngs_linked_and_logged(store, capsys):
    uri, folder = store
    out = folder / "figs" / "tiny.md"
    assert main(["report", "--tracking-uri", uri, "--study", "tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out.parent / 'tiny-curves.png'}" in printed and "logged 9 figure(s) of tiny" in printed
    text = out.read_text()
    for name in (
        "tiny-curves.png",
        "tiny-test_accuracy.png",
        "tiny-confusion.png",
        "tiny-mistakes.png",
        "tiny-templates.png",
        "tiny-samples.png",
        "tiny-per-class.png",
        "tiny-predictions.png",
    ):
        path = out.parent / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name})" in text
        assert matplotlib.image.imread(path).std() > 0.05  # something is drawn
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.role = 'parent'")[0]
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "figures")} >= {"figures/tiny-curves.png"}
    assert (
        main(
            [
                "report",
                "--tracking-uri",
                uri,
                "--study",
                "tiny",
                "--out",
                str(folder / "nofig" / "t.md"),
                "--no-figures",
            ]
        )
        == 0
    )
    assert not list((folder / "nofig").glob("*.png"))


@pytest.mark.slow
def test_grid_main_effects_and_interaction(write_study, tmp_path, capsys):
    grid = write_study(
        TINY_STUDY.split("[[stage]]")[0].replace('name = "tiny"', 'name = "g"\ndesign = "grid"')
        + '[model]\nkind = "mlp"\nhidden = [16]\n[grid]\n"model.dropout" = [0.0, 0.5]\n"model.batchnorm" = [false, '
          'true]\n'
    )
    uri = f"sqlite:///{tmp_path / 'g.db'}"
    assert main(["run", str(grid), "--tracking-uri", uri]) == 0
    capsys.readouterr()
    assert main(["report", "--tracking-uri", uri, "--study", "g", "--by", "model.dropout,model.batchnorm"]) == 0
    text = capsys.readouterr().out
    assert "### Main effects" in text and "| model.dropout" in text and "| model.batchnorm" in text
    assert "### Interaction of model.dropout and model.batchnorm" in text
    assert "Δ vs first point" in text


@pytest.mark.slow
def test_runs_keep_test_outputs_for_the_figures(store):
    import numpy as np

    uri, folder = store
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    linear = client.search_runs([experiment], "tags.role = 'trial' and tags.stage = 'linear'")[0]
    path = client.download_artifacts(linear.info.run_id, "test_outputs.npz", dst_path=str(folder / "dl"))
    with np.load(path) as outputs:
        assert outputs["predictions"].shape == (500,) and outputs["weights"].shape == (10, 784)
        accuracy = linear.data.metrics["test_accuracy"]
        from tests.conftest import DATA_DIR

        labels = datasets.read_arrays("mnist", DATA_DIR)["test_labels"][:500]
        assert (outputs["predictions"] == labels).mean() == pytest.approx(accuracy)
        assert ((outputs["confidences"] > 0.1) & (outputs["confidences"] <= 1.0)).all()


@pytest.mark.slow
@pytest.mark.skipif(not __import__("shutil").which("pdflatex"), reason="no pdflatex on this machine")
def test_latex_compiles_with_booktabs(store, tmp_path):
    import subprocess

    uri, _ = store
    assert main(["report", "--tracking-uri", uri, "--study", "tiny", "--out", str(tmp_path / "t.tex")]) == 0
    document = tmp_path / "doc.tex"
    document.write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage[margin=1cm,landscape]{geometry}"
        "\\begin{document}\\input{t.tex}\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_losses_of_different_kinds_are_never_ranked_against_each_other():
    """linear-mse's test loss 0.0112 (an MSE) is smaller than cross-entropy's 0.27, not better: no bold across."""
    import pandas as pd

    from ablate.report._render import _bold_best_per_loss

    values = pd.Series([0.0112, 0.2700, 0.2500])
    losses = pd.Series(["mse", "cross_entropy", "cross_entropy"])
    cells = _bold_best_per_loss(["0.0112", "0.2700", "0.2500"], values, losses)
    assert cells == ["0.0112", "0.2700", "**0.2500**"]


def test_accuracy_per_arm_is_dots_with_whiskers_and_a_one_epoch_curve_has_markers(store, monkeypatch, tmp_path):
    """A bar's length reads as a proportion, which an axis cut to the arms' range makes a lie; dots do not. A study of
    one or two epochs draws its curves with markers, or they would be invisible dots or stubs."""
    import matplotlib.pyplot as plt

    from ablate.report import build
    from ablate.report._figures import _arms_figure, _curves_figure
    from ablate.tracking import Tracker

    uri, _ = store
    report = build(uri, "tiny")[0]
    drawn = []
    monkeypatch.setattr(plt, "close", drawn.append)
    _arms_figure(report, tmp_path / "arms.png", plt)
    axes = drawn[0].axes[0]
    assert not [p for p in axes.patches if type(p).__name__ == "Rectangle"]  # no bars
    assert any(line.get_marker() == "o" for line in axes.lines) and any(
        line.get_linestyle() == "--" for line in axes.lines
    )
    _curves_figure(Tracker(uri), report, tmp_path / "curves.png", plt)  # the tiny study trains 2 epochs
    assert all(line.get_marker() == "o" for line in drawn[1].axes[0].lines)


def test_optunas_plotting_leaves_the_style_of_later_figures_alone(tmp_path):
    import matplotlib
    import optuna

    from ablate.report._search import _history_figure

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1) ** 2, n_trials=3)
    matplotlib.use("Agg")  # as the report does first
    before = dict(matplotlib.rcParams)
    _history_figure(study, tmp_path / "history.png")
    assert (tmp_path / "history.png").exists()
    assert matplotlib.rcParams["axes.facecolor"] == before["axes.facecolor"]  # ggplot's grey, before
    assert {k: v for k, v in matplotlib.rcParams.items() if v != before[k]} == {}


def test_per_class_accuracy_weighted_by_the_class_counts_is_the_arms_accuracy(store):
    """Each arm's per-class test accuracies, weighted by how many test images each class has, give back the mean
    test accuracy of its runs: the heat map shows where an arm's accuracy comes from, not other numbers."""
    from ablate import datasets
    from ablate.report import build, per_class_accuracy
    from ablate.tracking import Tracker

    uri, _ = store
    report = build(uri, "tiny")[0]
    labels = datasets.read_arrays("mnist", DATA_DIR)["test_labels"][:500].astype(int)
    accuracy = per_class_accuracy(Tracker(uri), report, labels, 10)
    assert list(accuracy.index) == ["linear", "mlp"] and accuracy.shape == (2, 10)
    weights = np.bincount(labels, minlength=10) / len(labels)
    linear = report.runs[report.runs["stage"] == "linear"]
    assert float(accuracy.loc["linear"] @ weights) == pytest.approx(linear["test_accuracy"].mean(), abs=1e-9)
