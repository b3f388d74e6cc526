"""`python -m reports render RESULTS... -o report.html [--summary-json PATH] [--compare OLD_SUMMARY]`,
and `python -m reports verdicts OLD.jsonl NEW.jsonl [--quantity forward|backward]` (which (backend, case,
quantity) verdicts changed)."""

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
        "--divergences", type=Path, help="known-divergence registry (default: the one shipped in the package)"
    )
    diff = commands.add_parser(
        "verdicts",
        help="list the (backend, case, quantity) keys whose verdict differs between two results files (exit 1 if any)",
    )
    diff.add_argument("old", type=Path, help="results file of the run before a change")
    diff.add_argument("new", type=Path, help="results file of the run after it")
    diff.add_argument(
        "--quantity",
        choices=["forward", "backward"],
        default=None,
        help="compare only forward (outputs) or backward (gradients) results (default: both)",
    )
    args = parser.parse_args(argv)
    if args.command == "verdicts":
        return _verdicts(args.old, args.new, args.quantity)

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


def _verdicts(old: Path, new: Path, quantity: str | None = None) -> int:
    from reports.verdict_diff import changes, verdicts

    try:
        before, after = verdicts([old], quantity), verdicts([new], quantity)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    lines = changes(before, after)
    for line in lines:
        print(line)
    print(f"{len(before)} results before, {len(after)} after, {len(lines)} changed")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
