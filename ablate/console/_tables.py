"""Tables that fit the console's width without cutting a value: columns wrap at spaces and never below their
longest word, headers break at underscores, and a table too wide even then becomes one block per row; the
comparison table `ablate run` ends with."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def terminal() -> Console:
    """A console for tables: as wide as the terminal (or $COLUMNS, even in a pipe), else wide enough not to
    squeeze a pipe or a log to 80 columns."""
    console = Console(highlight=False)  # rich reads $COLUMNS itself
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console
    return Console(highlight=False, width=240)


@dataclass(frozen=True)
class Column:
    """A column of a fitted table. `head`: the cell's format on a block's first line when the table falls back to
    one block per row; None: a `header: value` pair below it."""

    header: str
    right: bool = False
    nowrap: bool = False  # short fixed-form values (#, hash, seed, size, status): wrapping them helps nobody
    head: str | None = None


# From the usual boxed look to tighter ones, each a character or two narrower per column; then blocks.
TABLE_STYLES: tuple[dict, ...] = (
    {},
    {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "collapse_padding": True},
    {"box": box.SIMPLE_HEAD, "show_edge": False, "padding": 0},  # one space between columns, a rule under the header
)


def print_fitted(console: Console, title: str, columns: list[Column], rows: list[list[str]]) -> None:
    """A table as wide as the console without cutting a word, else one block per row. Headers break before cells
    wrap, and a tighter style is better than wrapped cells (a wrapped column makes every row taller)."""
    cells = [[row[i] for row in rows] for i in range(len(columns))]
    full = [max(map(cell_len, [c.header, *values])) for c, values in zip(columns, cells)]
    unbroken = [max(map(cell_len, [*_header_parts(c.header), *values])) for c, values in zip(columns, cells)]
    narrowest = [_min_width(c, values) for c, values in zip(columns, cells)]
    for low, high in ((unbroken, full), (narrowest, unbroken)):
        for style in TABLE_STYLES:
            room = console.width - _overhead(console, len(columns), style)
            if sum(low) <= room:
                console.print(fitted_table(title, columns, rows, style, share_widths(low, high, room)))
                return
    print_blocks(console, title, columns, rows)


def fitted_table(title: str, columns: list[Column], rows: list[list[str]], style: dict, widths: list[int]) -> Table:
    """The table with these column widths, each at least its longest word: cells wrap at spaces, headers after
    underscores, and nothing is cut (fold, not an ellipsis, should a width ever be short)."""
    table = Table(title=title, title_justify="left", **style)
    for column, width in zip(columns, widths):
        table.add_column(break_header(column.header, width), width=width, no_wrap=column.nowrap, overflow="fold",
                         justify="right" if column.right else "left")
    for row in rows:
        table.add_row(*row)
    return table


def _header_parts(header: str) -> list[str]:
    """'final_div_factor' → ['final_', 'div_', 'factor']: where a header may break."""
    parts = header.split("_")
    return [p + "_" for p in parts[:-1]] + parts[-1:]


def _min_width(column: Column, values: list[str]) -> int:
    """The narrowest the column can be without cutting a word of a cell or a part of its header."""
    words = values if column.nowrap else [w for v in values for w in v.split()]
    return max(map(cell_len, [*_header_parts(column.header), *words]))


def break_header(header: str, width: int) -> str:
    """The header in lines of at most `width`, broken after underscores."""
    lines = [""]
    for part in _header_parts(header):
        if lines[-1] and cell_len(lines[-1] + part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def share_widths(lows: list[int], highs: list[int], room: int) -> list[int]:
    """Column widths within `room` (≥ the sum of `lows`): the widest columns cut down to a common level, none below
    its low (rich's own shrinking ignores minimums, so it would cut words)."""
    level = max(highs)
    while sum(min(high, max(low, level)) for low, high in zip(lows, highs)) > room:
        level -= 1
    widths = [min(high, max(low, level)) for low, high in zip(lows, highs)]
    spare = room - sum(widths)
    for i, high in enumerate(highs):  # what the common level left over, to the first columns still cut
        extra = min(spare, high - widths[i])
        widths[i] += extra
        spare -= extra
    return widths


def _overhead(console: Console, count: int, style: dict) -> int:
    """Columns' padding and rules in a style: measured, as rich lays them out."""
    probe = Table(**style)
    for _ in range(count):
        probe.add_column(width=1)
    return Measurement.get(console, console.options.update_width(10_000), probe).maximum - count


def print_blocks(console: Console, title: str, columns: list[Column], rows: list[list[str]]) -> None:
    """One block per row: its head cells on one line, then its other cells as `header: value` pairs, packed."""
    console.print(title, markup=False)
    for row in rows:
        console.print("  ".join(c.head.format(v) for c, v in zip(columns, row) if c.head and v), markup=False)
        pairs = [f"{c.header}: {v}" for c, v in zip(columns, row) if c.head is None and v]
        for line in pack(pairs, console.width - 4):
            console.print("    " + line, markup=False)


def pack(items: list[str], width: int, gap: str = "  ") -> list[str]:
    """Items joined into lines of at most `width` (an item longer than that alone on its line)."""
    lines: list[str] = []
    for item in items:
        if lines and cell_len(lines[-1] + gap + item) <= width:
            lines[-1] += gap + item
        else:
            lines.append(item)
    return lines


def print_report_table(console: Console, report) -> None:
    """A study's comparison table in the terminal: the default columns (ablate.report's), fitted to its width."""
    from ablate.report import summary_frame

    frame = summary_frame(report, "default")
    delta = next((str(h) for h in frame.columns if str(h).startswith("Δ vs")), None)
    frame.columns = [_short_header(str(h)) for h in frame.columns]  # the markdown's footnote is not here to explain
    numeric = {"n", "Params", "Ref (%)"}
    whole = numeric | {"95% CI", frame.columns[3] if len(frame.columns) > 3 else ""}  # numbers never break mid-way
    columns = [Column(h, right=h in numeric, nowrap=h in whole or h.startswith(("Test", "Val"))) for h in frame.columns]
    rows = [[str(v).replace("**", "") for v in row] for row in frame.itertuples(index=False)]
    title = f"{report.name}: {len(report.runs)} of {report.planned} planned trials finished"
    print_fitted(console, title + (f"; Δ: {delta.removeprefix('Δ ')}" if delta else ""), columns, rows)


def _short_header(header: str) -> str:
    """A terminal header without what the end-of-run line and the markdown already say."""
    for long, short in (("Changes (", "Changes"), ("Search result (", "Search result"), ("Reference (%)", "Ref (%)")):
        if header.startswith(long):
            return short
    return "Δ" if header.startswith("Δ vs") else header
