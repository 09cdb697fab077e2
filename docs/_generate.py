"""Regenerate the manual's generated blocks: `python docs/_generate.py` (`--check`: exit 1 when one is stale).

A page holds a generated block between `<!-- generated: NAME -->` and `<!-- /generated: NAME -->`; what is between
is written from the code (the schema from ablate.spec, the command line from ablate.cli's parser), the rest of the
page by hand. tests/docs checks that every block is current, so the reference never drifts from the code."""

from __future__ import annotations

import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
if str(DOCS.parent) not in sys.path:  # run as a script from anywhere: the repository's ablate
    sys.path.insert(0, str(DOCS.parent))


def _schema() -> str:
    from ablate.spec import schema_markdown

    return schema_markdown()


def _cli() -> str:
    from ablate.cli import cli_markdown

    return cli_markdown()


BLOCKS = {"schema": (DOCS / "reference" / "schema.md", _schema), "cli": (DOCS / "reference" / "cli.md", _cli)}


def regenerated(name: str) -> tuple[Path, str, str]:
    """(page, its text now, its text with the block `name` regenerated)."""
    page, make = BLOCKS[name]
    text = page.read_text()
    pattern = re.compile(rf"(<!-- generated: {name} -->\n)(.*?)(<!-- /generated: {name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{page}: no <!-- generated: {name} --> … <!-- /generated: {name} --> block")
    body = make().rstrip("\n") + "\n"
    return page, text, pattern.sub(lambda m: m.group(1) + body + m.group(3), text)


def main(argv: list[str]) -> int:
    stale = []
    for name in BLOCKS:
        page, now, fresh = regenerated(name)
        if now != fresh:
            stale.append(str(page.relative_to(DOCS.parent)))
            if "--check" not in argv:
                page.write_text(fresh)
    if stale and "--check" in argv:
        print(f"stale: {', '.join(stale)}; run: python docs/_generate.py", file=sys.stderr)
        return 1
    print(("regenerated " + ", ".join(stale)) if stale else "the generated blocks are current")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
