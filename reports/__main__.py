"""`python -m reports render RESULTS... -o report.html [--summary-json PATH] [--compare OLD_SUMMARY]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_OUTPUT = Path("reports/out/report.html")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description="GRU conformance report")
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="render one HTML page from one or more JSON-lines results files")
    render.add_argument("results", nargs="+", type=Path, help="results files (several merge: CPU + GPU jobs, ...)")
    render.add_argument(
        "-o", "--output", type=Path, default=DEFAULT_OUTPUT, help=f"HTML page (default: {DEFAULT_OUTPUT})"
    )
    render.add_argument("--summary-json", type=Path, help="JSON summary (default: beside the page, NAME.summary.json)")
    render.add_argument(
        "--compare", type=Path, metavar="OLD_SUMMARY", help="list cells that got worse or better since this summary"
    )
    render.add_argument(
        "--divergences", type=Path, help="known-divergence registry (default: fixtures/divergences.toml)"
    )
    args = parser.parse_args(argv)

    from reports.render import render as render_report

    try:
        done = render_report(
            args.results,
            args.output,
            summary_json=args.summary_json,
            compare_to=args.compare,
            registry=args.divergences,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"report: {done.report} ({done.size / 1024:.0f} KiB, {done.seconds:.1f} s){' PARTIAL' if done.partial else ''}"
    )
    print(f"summary: {done.summary}")
    if args.compare:
        print(f"changes since {args.compare}: {len(done.changes) or 'none'}")
        for change in done.changes:
            print(f"  {change.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
