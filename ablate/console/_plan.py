"""`ablate plan`'s view: the trial table (hash, arm, seed, the settings that differ, size, status in the store;
with adaptive seeds, the first round's trials and a line counting the rest, and the budget from best to worst case),
its JSON form, a search's space and budget, the dataset lines (_data's) and the study's warnings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from ablate import models
from ablate.console._data import dataset_info, dataset_line
from ablate.console._tables import Column, print_fitted, terminal
from ablate.design import Design, Pack, flatten, format_value, pack_trials, varying_settings
from ablate.spec import Study, format_label, study_warnings, survey_space
from ablate.tracking import store_label

if TYPE_CHECKING:
    from ablate.design import Trial


STATUS_ORDER = ("done", "failed", "killed", "running", "to do")


HASH_SHOWN = 8  # hash characters a table shows: unique among a study's trials, and never cut further


def status_of(statuses: dict[str, str] | None, trial_hash: str) -> str:
    return "to do" if statuses is None else statuses.get(trial_hash, "to do")


def plan_json(study: Study, design: Design, statuses: dict[str, str] | None, data_dir: str | Path | None = None,
              ) -> dict:
    return {
        "study": study.name,
        "design": study.info.design,
        "dataset": dataset_info(study, design.trials, data_dir),
        "count": len(design.trials),
        "arms": design.arms,
        "excluded": study.excluded,
        "merged": [{"arm": arm, "same_as": kept} for arm, kept in design.merged],
        "adaptive": adaptive_json(study, design),
        "trials": [
            {"hash": t.hash, "stage": t.stage, "seed": t.seed, "params_count": t.params_count,
             "status": status_of(statuses, t.hash), "settings": t.settings.to_dict()}
            for t in design.trials
        ],
    }


def print_plan(study: Study, design: Design, statuses: dict[str, str] | None, uri: str,
               console: Console | None = None, *, data_dir: str | Path | None = None) -> None:
    """Each trial's hash, arm, seed, the settings that differ between trials, its size and its status in the store,
    on `console` (default: the terminal's); then the data the trials use and its files in `data_dir` (default: the
    data folder's default)."""
    trials = shown_trials(study, design.trials, statuses)
    varying = varying_settings(design.trials)
    # Conv blocks and custom-model arguments are unreadable as raw settings: one architecture column instead.
    structural = [k for k in varying if k.startswith(models.TABLE_SETTINGS)]
    varying = [k for k in varying if k not in structural]
    labels = setting_labels(varying)
    columns = [Column("#", right=True, nowrap=True, head="#{}"), Column("hash", nowrap=True, head="{}"),
               Column("stage" if study.info.design == "ladder" else "arm", head="{}"),
               Column("seed", right=True, nowrap=True),
               *([Column("model")] if structural else []), *(Column(label) for label in labels),
               Column("params", right=True, nowrap=True),
               *([Column("status", nowrap=True)] if statuses is not None else [])]
    rows = []
    for i, (t, shown) in enumerate(zip(trials, shown_hashes(trials)), 1):
        flat = flatten(t.settings.to_dict())
        cells = [format_value(flat[k]) if k in flat else "" for k in varying]
        shape = [t.architecture] if structural else []
        status = [status_of(statuses, t.hash)] if statuses is not None else []
        rows.append([str(i), shown, t.stage, str(t.seed), *shape, *cells, f"{t.params_count:,}", *status])
    console = console or terminal()
    print_fitted(console, f"{study.name}: {study.info.design}", columns, rows)
    if len(trials) < len(design.trials):  # adaptive seeds: the first round, and what the store already holds
        console.print(later_rounds_line(study, len(design.trials) - len(trials)), markup=False)
    if labels != varying:  # a column named by a suffix: say which setting it is
        console.print("settings: " + ", ".join(varying), markup=False)
    console.print(plan_summary(study, design), markup=False)
    console.print(dataset_line(dataset_info(study, trials, data_dir)), markup=False)
    where = store_label(uri)
    if statuses is not None:
        counts = Counter(status_of(statuses, t.hash) for t in trials)
        parts = [f"{counts[k]} {k}" for k in STATUS_ORDER if k in counts]
        then = ("every trial not done" if study.adaptive is None else
                "the first round's trials not done, then one more seed for each arm still undecided, round by round")
        console.print(f"Against {where}: {', '.join(parts)}; `ablate run` trains {then}.", markup=False)
    else:  # say which store was looked at: run from another folder, this is the first thing to know
        console.print(f"No store at {where} yet: every trial is to do; the first `ablate run` here creates it "
                      "(--tracking-uri for another).", markup=False)
    print_warnings(console, study)


def shown_trials(study: Study, trials: list[Trial], statuses: dict[str, str] | None) -> list[Trial]:
    """The trials a plan's table lists: all of them; with adaptive seeds, the first round's (each arm's first `min`
    seeds) and any other the store already holds — the rest only train if arms stay undecided."""
    if study.adaptive is None:
        return trials
    first = set(study.info.seeds[: study.adaptive.min])
    return [t for t in trials if t.seed in first or status_of(statuses, t.hash) != "to do"]


def later_rounds_line(study: Study, rest: int) -> str:
    """'+ up to 35 more trials (seeds 3–9) for arms still undecided after a round.'"""
    seeds = study.info.seeds[study.adaptive.min:]
    return (f"+ up to {rest} more trial(s) (seeds {_seed_range(seeds)}) for arms still undecided after a round, "
            "one seed per round.")


def adaptive_json(study: Study, design: Design) -> dict | None:
    """An adaptive study's seeds and its budget: `worst_case_trials` if every arm stays undecided to `max`."""
    if study.adaptive is None:
        return None
    a = study.adaptive
    return {"min": a.min, "max": a.max, "first": a.first, "first_round_trials": design.arms * a.min,
            "worst_case_trials": len(design.trials)}


def _seed_range(seeds: Sequence[int]) -> str:
    return f"{seeds[0]}–{seeds[-1]}" if len(seeds) > 2 else ", ".join(map(str, seeds))


def shown_hashes(trials: Sequence[Trial]) -> list[str]:
    """Each trial's hash as a table shows it: its first HASH_SHOWN characters, or all of them in the rare study
    where two trials share those (a table must never show two trials alike)."""
    short = [t.hash[:HASH_SHOWN] for t in trials]
    return short if len(set(short)) == len({t.hash for t in trials}) else [t.hash for t in trials]


def setting_labels(keys: list[str]) -> list[str]:
    """Each dotted setting by its shortest suffix that no other key ends with: 'model.dropout' → 'dropout'.

    A nested table's kind goes by the table's name ('train.schedule.kind' → 'schedule'), as a study file writes it.
    """
    named = [k.removesuffix(".kind") if k.endswith(".kind") and k.count(".") > 1 else k for k in keys]
    labels = []
    for key in named:
        others = [o for o in named if o != key]
        parts = key.split(".")
        suffixes = (".".join(parts[-n:]) for n in range(1, len(parts) + 1))
        labels.append(next((x for x in suffixes if not any(o == x or o.endswith("." + x) for o in others)), key))
    return labels


def search_plan(study: Study) -> tuple[list[dict[str, str]], str]:
    """A search has no fixed trial list: its space (one row per searched setting) and a line on its budget."""
    spec = study.search
    rows = []
    for entry in spec.space:
        if entry.kind == "categorical":
            values = ", ".join(entry.labels)
        else:
            values = (f"{entry.low:g} … {entry.high:g}" + (" (log)" if entry.log else "")
                      + (f" step {entry.step:g}" if entry.step else ""))
        when = "; ".join(f"{p} = {' or '.join(format_label(x) for x in v)}" for p, v in entry.when)
        rows.append({"setting": entry.path, "kind": entry.kind, "values": values, "when": when})
    s = spec.settings
    budget = ((f"{s.trials} trials" if s.trials else "no trial limit")
              + (f", at most {s.timeout:g} s" if s.timeout else ""))
    confirmed = s.confirm_top + s.confirm_base
    top = f"up to {s.confirm_top} points of the front" if s.several else f"the top {s.confirm_top}"
    summary = (f"search: {budget} ({s.sampler} sampler seeded {s.seed}, {s.pruner} pruner), {s.goal}, "
               f"seed {spec.seeds[0]}; then {top}{' and the base settings' if s.confirm_base else ''} "
               f"re-trained on seeds {', '.join(map(str, spec.confirm_seeds))} ({confirmed * len(spec.confirm_seeds)} "
               "trials)")
    budgets = [f"{key} {getattr(s, key):,}" for key in ("max_params", "max_macs") if getattr(s, key) is not None]
    if budgets:
        summary += (f"\n{' and '.join(budgets)}: {survey_space(study).describe()}; the others are rejected before "
                    "training")
    return rows, summary


def print_search_plan(study: Study, console: Console | None = None, *, data_dir: str | Path | None = None) -> None:
    rows, summary = search_plan(study)
    columns = [Column("setting", head="{}"), Column("kind", nowrap=True), Column("values"), Column("when")]
    console = console or terminal()
    print_fitted(console, f"{study.name}: search space", columns, [list(row.values()) for row in rows])
    console.print(summary, markup=False)
    console.print(dataset_line(dataset_info(study, [], data_dir)), markup=False)
    print_warnings(console, study)


def print_warnings(console: Console, study: Study) -> None:
    """What in the study file is allowed but probably not meant (ablate.spec.study_warnings)."""
    for warning in study_warnings(study):
        console.print(Text.assemble(("warning: ", "yellow"), warning))


def plan_summary(study: Study, design: Design) -> str:
    """'48 trials: 24 arms × 2 seeds (seeds 0, 1); grid of 48 points, 12 excluded, 12 merged (...)'."""
    word = {"ladder": "stages", "ablation": "arms (baseline + arms)", "grid": "arms"}[study.info.design]
    seeds = study.info.seeds
    a = study.adaptive
    if a is None:
        line = (f"{len(design.trials)} trials: {design.arms} {word} × {len(seeds)} seeds "
                f"(seeds {', '.join(map(str, seeds))})")
    else:  # the budget: the first round, and the worst case where every arm stays undecided to max
        line = (f"{design.arms * a.min}–{len(design.trials)} trials: {design.arms} {word} × {a.min}–{a.max} seeds "
                f"(adaptive: min {a.min}, max {a.max}, seeds {_seed_range(seeds)}; arms still undecided after a round "
                f"get one more seed, the baseline with them)")
    if study.info.design == "grid":
        points = len(study.stages) + study.excluded
        line += f"; grid of {points} points, {study.excluded} excluded by [[exclude]], {len(design.merged)} merged"
        if design.merged:
            line += " (they resolve to the same settings as another point, e.g. " + \
                f"'{design.merged[0][0]}' = '{design.merged[0][1]}')"
    if isinstance(study.execution.pack, int) and study.execution.pack > 1:
        tasks = pack_trials(shown_trials(study, design.trials, None), study.execution.pack)
        packs = [t for t in tasks if isinstance(t, Pack)]
        line += (f"; [execution] pack = {study.execution.pack}: {len(packs)} packs of "
                 f"{'/'.join(sorted({str(len(p.trials)) for p in packs}, key=int)) or '—'} trials, "
                 f"{len(tasks) - len(packs)} trial(s) alone{' in the first round' if study.adaptive else ''}")
    return line
