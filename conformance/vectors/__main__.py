"""`python -m conformance.vectors write|verify`: exit 0 ok, 1 an implementation failed, 2 unusable vectors or usage."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from conformance import matrix
from conformance.case import Case, CaseError
from conformance.records import BACKWARD, FORWARD, QUANTITIES
from conformance.schema import clobbers, same_file
from conformance.vectors.store import INDEX, MANIFEST, VectorsError, load_manifest, write
from conformance.vectors.verify import Implementation, print_table, verify, write_results


def seed_type(text: str) -> int:
    """`--seed`: a non-negative integer (numpy's SeedSequence refuses negative entropy)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def is_case_id(name: str) -> bool:
    try:
        Case.from_id(name)
    except CaseError:
        return False
    return True


def read_by_verify(vectors: Path, outputs: Path, results: Path) -> list[tuple[str, Path | None]]:
    """The files `verify` reads that a `--results` path could name: the manifest, the index, and the file
    itself when it sits in a case folder of either directory."""
    files: list[tuple[str, Path | None]] = [
        ("the vectors manifest", vectors / MANIFEST),
        ("the index", vectors / INDEX),
    ]
    for label, root in (("a vectors file", vectors), ("an output file", outputs)):
        if is_case_id(results.parent.name) and same_file(results.parent.parent, root):
            files.append((label, results))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.vectors", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write a tier's vectors (inputs, weights, oracle outputs, manifest)")
    w.add_argument("out", type=Path, help="directory to write, e.g. fixtures/vectors/pairwise")
    w.add_argument("--tier", required=True, choices=[t for t in matrix.TIERS])
    w.add_argument("--seed", type=seed_type, default=0, help="data seed, a non-negative integer (default: 0)")
    w.add_argument("--matrix", type=Path, default=matrix.DEFAULT_MATRIX)
    v = sub.add_parser("verify", help="check an implementation's outputs against stored vectors")
    v.add_argument("vectors", type=Path, help="a vectors directory (holds manifest.json)")
    v.add_argument("outputs", type=Path, help="OUTPUTS/<case id>/output.npy and h_n.npy")
    v.add_argument("--case", action="append", default=None, metavar="CASE_ID", help="verify only this case")
    v.add_argument("--precision", choices=["strict", "default"], default="strict")
    v.add_argument(
        "--quantity",
        choices=["forward", "backward", "both"],
        default="both",
        help="check the outputs (forward), the gradients grad_<name>.npy (backward; a case without them is "
        "unsupported), or both (default)",
    )
    v.add_argument("--name", default="external", help="the implementation's name in results and reports")
    v.add_argument("--family", default=None, help="its family (default: the name)")
    v.add_argument("--device", default="unknown", help="where it ran, e.g. cpu or cuda")
    v.add_argument("--results", type=Path, default=None, help="also write suite-schema JSONL results here")
    args = parser.parse_args(argv)

    if args.command == "write":
        started = time.perf_counter()
        try:
            out = write(args.tier, args.out, args.seed, args.matrix)
        except (matrix.MatrixError, VectorsError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        manifest = load_manifest(out)
        size = sum(f["bytes"] for e in manifest.data["cases"] for f in e["files"].values())
        print(
            f"wrote {len(manifest.cases)} cases, {size} bytes of .npy, to {out} in {time.perf_counter() - started:.2f}s"
        )
        return 0

    if not args.outputs.is_dir():
        print(f"error: {args.outputs}: no such outputs directory", file=sys.stderr)
        return 2
    if args.results is not None:
        clashes = clobbers([("--results", args.results)], read_by_verify(args.vectors, args.outputs, args.results))
        if clashes:
            print("error: refusing to overwrite an input: " + "; ".join(clashes), file=sys.stderr)
            return 2
    impl = Implementation(args.name, args.family or args.name, args.device)
    quantities = {"forward": (FORWARD,), "backward": (BACKWARD,), "both": QUANTITIES}[args.quantity]
    started = time.perf_counter()
    try:
        manifest = load_manifest(args.vectors)
        results = verify(manifest, args.outputs, args.case, args.precision, impl, quantities)
    except VectorsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_table(results, sys.stdout)
    if args.results:
        write_results(args.results, manifest, args.outputs, results, args.precision, impl, args.quantity)
        print(f"results: {args.results}")
    print(f"verified {len({r.case.id for r in results})} cases in {time.perf_counter() - started:.2f}s")
    return 1 if any(r.verdict.failing for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
