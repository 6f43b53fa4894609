"""The README's claims table, generated from a report's ``claims.csv`` (never copied by hand).

``python -m vanex.report.readme REPORT README`` rewrites the block between the two markers in
README; ``--check`` exits 1 when the block differs from what REPORT says. The default ``nox``
session runs it after the report, and a test checks the committed README against ``reports/``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
from vanex.report.tables import markdown_table

BEGIN = "<!-- claims table: generated from reports/claims.csv by `python -m vanex.report.readme reports README.md` -->"
END = "<!-- end of the generated claims table -->"
VERDICTS = ("✓", "✗", "fragile")


def read_claims(report: Path) -> pd.DataFrame:
    """A report's ``claims.csv``, every column as text."""
    return pd.read_csv(report / "claims.csv", dtype=str, keep_default_na=False)


def _verdicts(text: str) -> str:
    """'×0.5 ✗, ×2 ✓' from a neighbourhood cell; 'not run' or 'n/a' where the claim has none."""
    found = re.findall(r"(×[\d.]+) (✓|✗|fragile|not run)", text)
    if found:
        return ", ".join(f"{k} {v}" for k, v in found)
    return "not run" if text.startswith("not run") else "n/a"


def claims_block(claims: pd.DataFrame) -> str:
    """The count line and the table: each claim's verdict, its numbers (mean [95% CI] (n)), its
    verdict on the second numeric path and at the neighbouring learning rates."""
    counts = claims["status"].value_counts()
    line = ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)
    rows = [
        [
            f"`{r.name}`" + (f" (v{r.version})" if int(r.version) > 1 else ""),
            r.status,
            r.numbers.replace("||", "‖"),  # a norm, not a cell border
            r.second_path.split(":")[0],
            _verdicts(r.neighbourhood),
        ]
        for r in claims.itertuples()
    ]
    header = ["claim", "verdict", "measured: mean [95% CI] (n)", "second path", "lr ×0.5, ×2"]
    return f"**{line}** of {len(claims)}.\n\n" + markdown_table(header, rows)


def rewrite(readme: str, claims: pd.DataFrame) -> str:
    """``readme`` with its generated block replaced by ``claims``'s."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no generated claims block ({BEGIN!r} ... {END!r})")
    return readme[: start + len(BEGIN)] + "\n" + claims_block(claims) + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vanex.report.readme", description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="a report folder (holds claims.csv), e.g. reports")
    parser.add_argument("readme", type=Path, help="the README to rewrite, e.g. README.md")
    parser.add_argument("--check", action="store_true", help="only say whether the README's block is current")
    args = parser.parse_args(argv)
    try:
        claims = read_claims(args.report)
        text = args.readme.read_text()
        new = rewrite(text, claims)
    except (OSError, ValueError) as exc:
        print(f"vanex.report.readme: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(
                f"{args.readme}'s claims table differs from {args.report}/claims.csv; run without --check",
                file=sys.stderr,
            )
        return int(new != text)
    if new != text:
        args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
