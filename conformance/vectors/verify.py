"""Checking an outside implementation's outputs against stored vectors, with the suite's own comparison.

Outputs use the vectors' format: OUTPUTS/<case id>/output.npy and h_n.npy, in the
case dtype (bfloat16 as raw uint16 bits), PyTorch's layout. A case the
implementation can't express is declared by OUTPUTS/<case id>/unsupported.txt
holding the reason, so "unsupported" stays distinct from "failed" as in the suite.

Gradients (the backward check), when the implementation provides them: OUTPUTS/<case id>/
grad_<name>.npy for x, h0 and every state_dict name, dL/d that tensor for the loss the
vectors' cotangents define, in the case dtype and the tensor's own layout. A case without
any grad_*.npy file is `unsupported` for the backward check, never failed.
"""

from __future__ import annotations

import shlex
import stat
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from conformance.case import Case
from conformance.compare_backward import judge_gradients
from conformance.data import GruOutput
from conformance.environment import environment
from conformance.pipeline import Attempt, judge
from conformance.records import BACKWARD, FORWARD, QUANTITIES, Result, ResultsWriter
from conformance.tolerance import Tolerance
from conformance.tolerance_backward import BackwardGain, BackwardTolerance
from conformance.vectors.npy import NpyError, npy_bytes, read_npy
from conformance.vectors.store import (
    Manifest,
    VectorsError,
    check_integrity,
    decode,
    load_case,
    load_gradients,
    storage,
)
from conformance.verdict import Verdict

OUTPUT_NAMES = ("output", "h_n")
UNSUPPORTED = "unsupported.txt"
GRADIENT = "grad_"  # OUTPUTS/<case id>/grad_<name>.npy: the implementation's dL/d<name>


@dataclass(frozen=True)
class Implementation:
    """How the outside implementation appears in results and reports (one column)."""

    name: str = "external"
    family: str = "external"
    device: str = "unknown"


def write_outputs(outputs: Path, case: Case, result: GruOutput) -> None:
    """Store one case's outputs in the verifier's format (a helper for Python implementations)."""
    folder = outputs / case.id
    folder.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_NAMES:
        array = np.asarray(getattr(result, name))
        (folder / f"{name}.npy").write_bytes(npy_bytes(storage(array, case.dtype)))


def write_gradients(outputs: Path, case: Case, gradients: Mapping[str, Any]) -> None:
    """Store one case's gradients (name -> dL/d that tensor) in the verifier's format: grad_<name>.npy."""
    folder = outputs / case.id
    folder.mkdir(parents=True, exist_ok=True)
    for name, gradient in gradients.items():
        (folder / f"{GRADIENT}{name}.npy").write_bytes(npy_bytes(storage(np.asarray(gradient), case.dtype)))


def largest_output(case: Case, name: str) -> int:
    """The most bytes an honest output file can hold: a generous header plus every element in float64.

    Checked before reading, so an output that is a symlink to /dev/zero, or a huge file, is refused
    instead of read until memory runs out."""
    units = case.hidden_size * case.num_directions
    elements = case.seq_len * case.batch * units if name == "output" else case.num_layers * units * case.batch
    return 65536 + 8 * elements


def read_output(path: Path, case: Case, limit: int | None = None) -> np.ndarray:
    """One output file, decoded; errors name the file and the case. `limit`: the most bytes it may hold
    (default: what an honest output or h_n file can take)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise VectorsError(f"{path}: case {case.id}: output file is missing") from None
    except OSError as error:
        raise VectorsError(f"{path}: case {case.id}: can't read it: {error.strerror or error}") from None
    limit = largest_output(case, path.stem) if limit is None else limit
    if not stat.S_ISREG(info.st_mode):
        raise VectorsError(f"{path}: case {case.id}: not a regular file")
    if info.st_size > limit:
        raise VectorsError(
            f"{path}: case {case.id}: {info.st_size} bytes, more than this case's output can take ({limit})"
        )
    with path.open("rb") as handle:
        blob = handle.read(limit + 1)
    try:
        array = read_npy(blob)
    except NpyError as error:
        raise VectorsError(f"{path}: case {case.id}: {error}") from None
    return decode(array, case.dtype)


def rerun_command(vectors: Path, outputs: Path, case: Case, precision: str, quantity: str = FORWARD) -> str:
    parts = ["python", "-m", "conformance.vectors", "verify", str(vectors), str(outputs), "--case", case.id]
    parts += ["--quantity", quantity]
    if precision != "strict":
        parts += ["--precision", precision]
    return shlex.join(parts)


def attempt_outputs(outputs: Path, case: Case) -> Attempt:
    """The outside implementation's "run": its declared refusal, its stored outputs, or `error` if unreadable."""
    folder = outputs / case.id
    if (folder / UNSUPPORTED).is_file():
        with (folder / UNSUPPORTED).open("rb") as handle:  # a reason is a line or two, never megabytes
            reason = handle.read(4096).decode("utf-8", errors="replace").strip()
        return Attempt(Verdict.UNSUPPORTED, reason=reason or "declared unsupported")
    try:
        return Attempt(None, GruOutput(*(read_output(folder / f"{name}.npy", case) for name in OUTPUT_NAMES)))
    except VectorsError as error:
        return Attempt(Verdict.ERROR, reason=str(error))


def verify_case(
    manifest: Manifest, outputs: Path, case_id: str, precision: str = "strict", impl: Implementation | None = None
) -> Result:
    """One case's Result: the pipeline's judge decides shape, dtype and arithmetic; unreadable outputs are `error`."""
    impl = impl or Implementation()
    entry = manifest.entry(case_id)
    case = entry.case
    result = Result(
        case=case,
        backend=impl.name,
        family=impl.family,
        device=impl.device,
        verdict=Verdict.PASS,
        rerun=rerun_command(manifest.root, outputs, case, precision),
        precision=precision,
        reference=str(manifest.root),
    )
    started = time.perf_counter()
    tried = attempt_outputs(outputs, case)
    if tried.output is None:
        result.verdict, result.reason = tried.verdict or Verdict.ERROR, tried.reason
        result.timing = {"compare_s": time.perf_counter() - started}
        return result
    _, inputs, expected = load_case(manifest, case_id)
    try:
        tolerance = Tolerance(**entry.tolerance[precision])
    except (KeyError, TypeError) as error:
        raise VectorsError(
            f"{manifest.path}: case {case_id}: tolerance record {entry.tolerance.get(precision)!r} does not fit "
            f"this version of conformance.tolerance ({error}); regenerate the vectors"
        ) from None
    judged = judge(case, expected, tried.output, tolerance, inputs.lengths)
    result.tolerance = tolerance.as_dict()
    result.verdict, result.checks = judged.verdict, judged.checks
    folder = outputs / case_id
    result.reason = "\n".join(
        f"{folder / (c.name.split('.')[0] + '.npy')}: case {case_id}: {c.message}" for c in result.failing_checks
    )
    result.timing = {"compare_s": time.perf_counter() - started}
    return result


def attempt_gradients(outputs: Path, case: Case, expected: Mapping[str, np.ndarray]) -> Attempt:
    """The outside implementation's "run_backward": its stored gradients; `unsupported` when it declares the case
    unsupported or provides no grad_*.npy file at all; `error` when one can't be read."""
    folder = outputs / case.id
    if (folder / UNSUPPORTED).is_file():
        with (folder / UNSUPPORTED).open("rb") as handle:
            reason = handle.read(4096).decode("utf-8", errors="replace").strip()
        return Attempt(Verdict.UNSUPPORTED, reason=reason or "declared unsupported")
    files = sorted(folder.glob(f"{GRADIENT}*.npy")) if folder.is_dir() else []
    if not files:
        return Attempt(
            Verdict.UNSUPPORTED,
            reason=f"no gradients provided ({folder / (GRADIENT + '<name>.npy')}): the backward pass is not checked",
        )
    # Any gradient file is at most as large as the largest expected one (plus a header): an unexpected name too.
    limit = 65536 + 8 * max(int(np.prod(g.shape, dtype=np.int64)) for g in expected.values())
    try:
        return Attempt(None, gradients={f.stem[len(GRADIENT) :]: read_output(f, case, limit) for f in files})
    except VectorsError as error:
        return Attempt(Verdict.ERROR, reason=str(error))


def verify_case_backward(
    manifest: Manifest, outputs: Path, case_id: str, precision: str = "strict", impl: Implementation | None = None
) -> Result:
    """One case's backward Result: the implementation's grad_*.npy against the stored gradients, with the stored
    per-tensor tolerances, judged by the suite's own gradient comparison."""
    impl = impl or Implementation()
    entry = manifest.entry(case_id)
    case = entry.case
    result = Result(
        case=case,
        backend=impl.name,
        family=impl.family,
        device=impl.device,
        verdict=Verdict.PASS,
        rerun=rerun_command(manifest.root, outputs, case, precision, BACKWARD),
        precision=precision,
        reference=str(manifest.root),
        quantity=BACKWARD,
    )
    started = time.perf_counter()
    stored = load_gradients(manifest, case_id)
    if stored is None or entry.tolerance_backward is None:
        result.verdict = Verdict.SKIPPED
        result.reason = f"{manifest.root} holds no expected gradients (schema_version 1): regenerate the vectors"
        return result
    _, expected = stored
    tried = attempt_gradients(outputs, case, expected)
    if tried.gradients is None:
        result.verdict, result.reason = tried.verdict or Verdict.ERROR, tried.reason
        result.timing = {"compare_s": time.perf_counter() - started}
        return result
    record = entry.tolerance_backward.get(precision) or {}
    try:
        tolerance = BackwardTolerance(**{**record, "gain": BackwardGain(**record["gain"])})
    except (KeyError, TypeError) as error:
        raise VectorsError(
            f"{manifest.path}: case {case_id}: backward tolerance record for {precision!r} does not fit this version "
            f"of conformance.tolerance_backward ({error}); regenerate the vectors"
        ) from None
    _, inputs, _ = load_case(manifest, case_id)
    judged = judge_gradients(case, expected, tried.gradients, tolerance, inputs.lengths)
    result.tolerance = tolerance.as_dict()
    result.verdict, result.checks = judged.verdict, judged.checks
    folder = outputs / case_id
    result.reason = "\n".join(
        f"{folder / (GRADIENT + c.name.removeprefix('grad ').split('.')[0] + '.npy')}: case {case_id}: {c.message}"
        for c in result.failing_checks
    )
    result.timing = {"compare_s": time.perf_counter() - started}
    return result


def verify(
    manifest: Manifest,
    outputs: Path,
    case_ids: list[str] | None = None,
    precision: str = "strict",
    impl: Implementation | None = None,
    quantities: tuple[str, ...] = QUANTITIES,
) -> list[Result]:
    """Results for the selected cases (all by default), each case's forward then backward result (`quantities`).
    Raises VectorsError if the vectors themselves are damaged."""
    ids = [manifest.entry(case_id).case.id for case_id in case_ids] if case_ids else list(manifest.cases)
    problems = check_integrity(manifest, ids)
    if problems:
        raise VectorsError("the vectors failed their integrity check:\n" + "\n".join(problems))
    checks = {FORWARD: verify_case, BACKWARD: verify_case_backward}
    return [checks[q](manifest, outputs, case_id, precision, impl) for case_id in ids for q in quantities]


def print_table(results: list[Result], out: TextIO) -> None:
    """One line per case and quantity: verdict, worst headroom (error / tolerance), and the first problem if any."""
    width = max([len(r.case.id) for r in results] + [4])
    out.write(f"{'case':<{width}}  {'quantity':<8}  {'verdict':<11}  {'headroom':>9}  detail\n")
    for r in results:
        headroom = "" if r.worst_headroom is None else f"{r.worst_headroom:.3g}"
        detail = r.reason.splitlines()[0] if r.reason else ""
        out.write(f"{r.case.id:<{width}}  {r.quantity:<8}  {r.verdict.value:<11}  {headroom:>9}  {detail}\n")
        for line in r.reason.splitlines()[1:]:
            out.write(f"{'':<{width}}  {'':<8}  {'':<11}  {'':>9}  {line}\n")
    counts: dict[str, int] = {}
    for r in results:
        counts[r.verdict.value] = counts.get(r.verdict.value, 0) + 1
    out.write("verdicts: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) + "\n")


def write_results(
    path: Path,
    manifest: Manifest,
    outputs: Path,
    results: list[Result],
    precision: str,
    impl: Implementation,
    quantity: str = "both",
) -> None:
    """The suite's JSONL schema (environment, backend, result, end), so `python -m reports render` can show it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")  # one file per run, as the plugin does
    writer = ResultsWriter(path, time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8])
    options = {
        "tier": manifest.data.get("tier"),
        "cases": len({r.case.id for r in results}),
        "seed": manifest.data.get("seed"),
        "device": impl.device,
        "precision": precision,
        "backends": [impl.name],
        "quantity": quantity,
        "vectors": str(manifest.root),
        "outputs": str(outputs),
    }
    writer.write(environment(options) | {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    writer.write(
        {
            "kind": "backend",
            "backend": impl.name,
            "family": impl.family,
            "device": impl.device,
            "available": True,
            "availability": "",
            "notes": {"outputs": str(outputs), "checked_by": "python -m conformance.vectors verify"},
        }
    )
    counts: dict[str, int] = {}
    for result in results:
        writer.write(result.as_record())
        counts[result.verdict.value] = counts.get(result.verdict.value, 0) + 1
    failed = any(r.verdict.failing for r in results)
    writer.write(
        {"kind": "end", "exitstatus": int(failed), "counts": counts, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    )
    writer.close()
