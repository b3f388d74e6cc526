"""Writing and reading stored vectors: one directory per tier, one folder of .npy files per case.

Layout (documented in fixtures/README.md):

    VECTORS/manifest.json      schema version, provenance, tolerance policies, cases, sha256 of every file
    VECTORS/index.txt          the same cases, one line each, for readers without a JSON parser
    VECTORS/<case id>/<name>.npy

Each case holds its weights, inputs and expected outputs (the forward check), and since schema
version 2 the backward check's cotangents and expected gradients, with per-tensor tolerances.

Every byte is a function of (tier, seed, matrix file, oracle, data generator), so
regenerating must reproduce the committed files exactly; only the manifest's
`produced_by` block (library versions) may legitimately differ between machines.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import platform
import shutil
import stat
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from conformance import matrix, schema
from conformance.case import Case, CaseError
from conformance.data import Cotangents, GruOutput, Inputs, Weights, param_names
from conformance.dtypes import FORMATS, fmt
from conformance.engine import oracle_gradients, oracle_reference
from conformance.tolerance import EMULATED_DTYPES, FIRST_ORDER_FACTOR, SAFETY, STORE_ROUNDINGS, derive
from conformance.tolerance_backward import derive_backward
from conformance.vectors.npy import WRITE_DESCRS, NpyError, npy_bytes, read_npy

SCHEMA = "gru-conformance-vectors"
# 2 added the backward check's files and tolerances; version 1 vectors (forward only) are still read.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
INDEX_SCHEMA = 1  # index.txt's own format, unchanged by version 2 (it lists no gradient files)
MANIFEST = "manifest.json"
INDEX = "index.txt"
EXPECTED = ("expected_output", "expected_h_n")
COTANGENTS = ("cotangent_output", "cotangent_h_n")
EXPECTED_GRADIENT = "expected_grad_"  # + a gradient's name: x, h0 or a state_dict name
PRECISIONS = ("strict", "default")
TOLERANCE_FORMULA = {
    "emulated": "atol = safety * max(emulated_error, output_rounding); emulated_error = the largest |emulated - "
    "expected| over output and h_n of a correct kernel in the case dtype (float32 accumulation and elementwise "
    "math, every stored tensor rounded to the dtype; two designs, conformance/emulate.py); output_rounding = "
    "unit_roundoff * max|expected|; each case records both",
    "first-order": "atol = safety * (store_roundings * unit_roundoff + sqrt(dot_length) * accumulate_roundoff) * "
    "gain; dot_length = max(input_size, hidden_size * num_directions if num_layers > 1 else 0) + hidden_size + 2; "
    "gain = the case's error gain, measured on the float64 oracle by Monte Carlo arithmetic; each case records it",
}


BACKWARD_TOLERANCE_FORMULA = (
    "atol_k = safety * (sigma_forward * gain.state[k] + sigma_adjoint * gain.adjoint[k] + sum_roundoff * "
    "gain.accumulation[k]), at least the dtype's smallest normal number; sigma_forward = store_roundings * "
    "unit_roundoff + sqrt(forward_dot_length) * accumulate_roundoff, sigma_adjoint = the same with "
    "adjoint_dot_length = 3 * hidden_size + 1, sum_roundoff = max(unit_roundoff, accumulate_roundoff); the gains "
    "are measured on the float64 backpropagation oracle by Monte Carlo arithmetic (conformance/tolerance_backward.py); "
    "each case records them"
)


class VectorsError(schema.SchemaError):
    """Vectors that can't be trusted or used; the message names the file and, where there is one, the case."""


def is_expected(name: str) -> bool:
    """Whether a stored tensor is an oracle result (its last bits depend on the float environment)."""
    return name in EXPECTED or name.startswith(EXPECTED_GRADIENT)


def storage(array: np.ndarray, dtype: str) -> np.ndarray:
    """The array as stored: bfloat16 as its raw uint16 bits (npy has no bfloat16), everything else as is."""
    if dtype == "bfloat16":
        return np.ascontiguousarray(array).view(np.uint16)
    return array


def decode(array: np.ndarray, dtype: str) -> np.ndarray:
    """Inverse of `storage`: uint16 bits of a bfloat16 tensor become ml_dtypes.bfloat16 again."""
    if dtype == "bfloat16" and array.dtype == np.uint16:
        return array.view(fmt("bfloat16").numpy)
    return array


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def tensors(case: Case) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (array, logical dtype) of everything stored for a case, in a fixed order."""
    weights, inputs, expected = oracle_reference(case)
    out: dict[str, tuple[np.ndarray, str]] = {name: (weights.tensors[name], case.dtype) for name in param_names(case)}
    out["x"] = (inputs.x, case.dtype)
    if inputs.h0 is not None:
        out["h0"] = (inputs.h0, case.dtype)
    if inputs.lengths is not None:
        out["lengths"] = (np.asarray(inputs.lengths, dtype=np.int64), "int64")
    out["expected_output"] = (np.asarray(expected.output, dtype=np.float64), "float64")
    out["expected_h_n"] = (np.asarray(expected.h_n, dtype=np.float64), "float64")
    cotangents, gradients = oracle_gradients(case)
    out["cotangent_output"] = (cotangents.output, case.dtype)
    out["cotangent_h_n"] = (cotangents.h_n, case.dtype)
    for name, gradient in gradients.items():
        out[EXPECTED_GRADIENT + name] = (np.asarray(gradient, dtype=np.float64), "float64")
    return out


def tolerance_policy() -> dict[str, Any]:
    """The derivation of `conformance.tolerance`, as data: every parameter an outside reader needs.

    Per-dtype parameters come from `derive` itself (on a one-step probe case), never restated here.
    """
    dtypes: dict[str, dict[str, Any]] = {}
    for name in FORMATS:
        probe = Case(input_size=1, hidden_size=1, seq_len=1, batch=1, dtype=name)
        dtypes[name] = {}
        for precision in PRECISIONS:
            t = derive(probe, precision)
            dtypes[name][precision] = {
                "unit_roundoff": t.unit_roundoff,
                "accumulate_roundoff": t.accumulate_roundoff,
                "accumulate_format": t.accumulate_format,
            }
    return {
        "methods": {name: "emulated" if name in EMULATED_DTYPES else "first-order" for name in FORMATS},
        "safety": {"emulated": SAFETY, "first-order": FIRST_ORDER_FACTOR},
        "store_roundings": STORE_ROUNDINGS,
        "formula": TOLERANCE_FORMULA,
        "verdict": "max |actual - expected| <= atol over valid positions and over h_n; padded positions "
        "(packed cases) must be exactly 0, else the verdict is 'convention'",
        "dtypes": dtypes,
        "precisions": {
            "strict": "TF32 off: float32 accumulates in float32",
            "default": "float32 GEMMs may run in TF32 on a GPU (16-bit operands are exact in TF32: unchanged)",
        },
        "source": "conformance/tolerance.py",
    }


def backward_tolerance_policy() -> dict[str, Any]:
    """The backward derivation (`conformance.tolerance_backward`) in words; each case records every ingredient."""
    return {
        "safety": FIRST_ORDER_FACTOR,
        "store_roundings": STORE_ROUNDINGS,
        "loss": "L = sum(output * cotangent_output) + sum(h_n * cotangent_h_n); cotangent_output is 0 at padded "
        "positions; the gradients are dL/dx, dL/dh0 (cases with an initial state) and dL/d every state_dict tensor",
        "formula": BACKWARD_TOLERANCE_FORMULA,
        "verdict": "per gradient tensor k: max |actual - expected| <= atol_k; for packed cases dL/dx at padded "
        "positions must be exactly 0 (a padded input never reaches the loss), else the verdict is 'fail'",
        "source": "conformance/tolerance_backward.py",
    }


def produced_by() -> dict[str, Any]:
    """Library versions, and the float environment that decides the expected values' last bits."""
    versions: dict[str, str | None] = {}
    for name in ("gru-conformance", "numpy", "ml_dtypes", "covertable"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"packages": versions, "python": platform.python_version(), "float_environment": float_environment()}


def float_environment() -> dict[str, Any]:
    """What the oracle's float64 results depend on below tolerance level, bit for bit.

    Inputs and weights are exact on every machine (integer PCG64 output, then rounding).
    The expected values are not quite: numpy picks a SIMD tanh by CPU features, and
    OpenBLAS picks a matmul kernel by CPU, and both change the last bit or two. Two
    machines with equal environments regenerate identical bytes.
    """
    config = getattr(np.__config__, "CONFIG", {})
    blas = config.get("Build Dependencies", {}).get("blas", {})
    return {
        "machine": platform.machine(),
        "numpy": np.__version__,
        "numpy_simd": sorted(config.get("SIMD Extensions", {}).get("found", [])),
        "blas": f"{blas.get('name')} {blas.get('version')}",
        "blas_core": _openblas_core(),
    }


def _openblas_core() -> str | None:
    """The kernel OpenBLAS chose for this CPU (e.g. SkylakeX, Haswell); None where that can't be asked."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8")
    except OSError:
        return None
    libraries = sorted({line.split()[-1] for line in maps.splitlines() if "openblas" in line and "/" in line})
    for library in libraries:
        try:
            handle = ctypes.CDLL(library)
        except OSError:
            continue
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
            function = getattr(handle, symbol, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                return function().decode()
    return None


def _is_case_dir(path: Path) -> bool:
    try:
        Case.from_id(path.name)
    except CaseError:
        return False
    return path.is_dir()


def index_text(entries: list[dict[str, Any]]) -> str:
    """One `key=value` line per case; a C reader splits on spaces and '=' and needs nothing else."""
    lines = [
        f"# {SCHEMA} index; the manifest is authoritative and holds this file's sha256",
        f"schema {INDEX_SCHEMA}",
    ]
    for entry in entries:
        c = entry["case"]
        fields = {
            "id": entry["id"],
            "input_size": c["input_size"],
            "hidden_size": c["hidden_size"],
            "num_layers": c["num_layers"],
            "bidirectional": int(c["bidirectional"]),
            "batch_first": int(c["batch_first"]),
            "bias": int(c["bias"]),
            "batch": c["batch"],
            "seq_len": c["seq_len"],
            "packed": int(c["lengths"] != "dense"),
            "initial_state": int(c["initial_state"]),
            "dtype": c["dtype"],
            "atol": repr(entry["tolerance"]["strict"]["atol"]),  # repr round-trips through strtod exactly
        }
        lines.append("case " + " ".join(f"{k}={v}" for k, v in fields.items()))
    return "\n".join(lines) + "\n"


def writable(out: Path) -> None:
    """Refuse to write vectors where they would destroy something: only into a new or empty directory, or
    one that already holds vectors (whose case folders the write replaces)."""
    if out.exists() and not out.is_dir():
        raise VectorsError(f"{out}: exists and is not a directory; vectors are written into a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise VectorsError(
            f"{out}: refusing to write vectors here: the directory is not empty and holds no {SCHEMA} {MANIFEST}; "
            "write into an empty directory or one that already holds vectors (a write replaces its case folders)"
        )


def write(tier: str, out: Path, seed: int = 0, matrix_path: Path = matrix.DEFAULT_MATRIX) -> Path:
    """Write a tier's vectors under `out`; replaces earlier vectors there, leaves other files alone."""
    writable(out)
    cases = matrix.cases(tier, seed, matrix_path)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():  # only what an earlier write made: case folders, manifest, index
        if _is_case_dir(stale):
            shutil.rmtree(stale)
    entries = []
    for case in cases:
        folder = out / case.id
        folder.mkdir()
        files = {}
        for name, (array, dtype) in tensors(case).items():
            stored = storage(array, dtype)
            blob = npy_bytes(stored)
            (folder / f"{name}.npy").write_bytes(blob)
            files[name] = {
                "path": f"{case.id}/{name}.npy",
                "dtype": dtype,
                "descr": stored.dtype.newbyteorder("<").str,
                "shape": list(array.shape),
                "bytes": len(blob),
                "sha256": sha256(blob),
            }
        entries.append(
            {
                "id": case.id,
                "case": case.as_dict(),
                "tolerance": {p: derive(case, p).as_dict() for p in PRECISIONS},
                "tolerance_backward": {p: derive_backward(case, p).as_dict() for p in PRECISIONS},
                "files": files,
            }
        )
    index = index_text(entries).encode()
    (out / INDEX).write_bytes(index)
    manifest = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "tier": tier,
        "seed": seed,
        "produced_by": produced_by(),
        "format": "NPY 1.0, little-endian, C order; bfloat16 tensors stored as raw uint16 bits ('<u2'); "
        "expected_* are the float64 oracle's output in PyTorch's layout, expected_grad_* its gradients for the "
        "loss the cotangent_* files define; see fixtures/README.md",
        "tolerance_policy": tolerance_policy(),
        "backward_tolerance_policy": backward_tolerance_policy(),
        "files": {INDEX: {"bytes": len(index), "sha256": sha256(index)}},
        "cases": entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return out


@dataclass(frozen=True)
class CaseEntry:
    case: Case
    tolerance: dict[str, dict[str, Any]]  # precision -> Tolerance.as_dict()
    files: dict[str, dict[str, Any]]
    tolerance_backward: dict[str, dict[str, Any]] | None = None  # precision -> BackwardTolerance.as_dict(); v2


@dataclass(frozen=True)
class Manifest:
    root: Path
    data: dict[str, Any]
    cases: dict[str, CaseEntry]

    @property
    def path(self) -> Path:
        return self.root / MANIFEST

    def entry(self, case_id: str) -> CaseEntry:
        try:
            return self.cases[case_id]
        except KeyError:
            raise VectorsError(
                f"{self.path}: case {case_id} is not in these vectors ({len(self.cases)} cases; their ids are "
                f"listed in {self.root / INDEX})"
            ) from None


HEX = frozenset("0123456789abcdef")
FILE_DTYPES = (*FORMATS, "int64", "float64")


def _relative_path(where: schema.Where, value: Any, field: str) -> str:
    """A manifest path: relative, '/'-separated, no '..': it can only name a file inside the vectors directory."""
    path = schema.text(where, value, field, "a relative path inside the vectors directory")
    pure = PurePosixPath(path)
    if pure.is_absolute() or PureWindowsPath(path).is_absolute() or "\\" in path or ".." in pure.parts:
        raise where.expected(field, "a relative path inside the vectors directory (no '..', not absolute)", value)
    return path


def _file_spec(where: schema.Where, value: Any, field: str, with_path: bool = True) -> dict[str, Any]:
    spec = schema.table(where, value, field, "a file entry (path, dtype, descr, shape, bytes, sha256)")
    at = where.at(field)
    keys = ("path", "dtype", "descr", "shape", "bytes", "sha256") if with_path else ("bytes", "sha256")
    schema.check_keys(at, spec, keys, required=keys)
    if with_path:
        _relative_path(at, spec["path"], "path")
        schema.one_of(at, spec["dtype"], "dtype", FILE_DTYPES)
        schema.one_of(at, spec["descr"], "descr", WRITE_DESCRS)
        schema.list_of(at, spec["shape"], "shape", lambda w, v, f: schema.integer(w, v, f, 0), "a list of sizes", False)
    schema.integer(at, spec["bytes"], "bytes", minimum=0)
    digest = spec["sha256"]
    if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= HEX:
        raise at.expected("sha256", "64 lowercase hex digits", digest)
    return spec


def load_manifest(root: Path) -> Manifest:
    """Parse and validate a manifest; a schema version this code doesn't know is refused, not guessed at.

    Every field a reader uses is checked here, file paths included: a path must be relative and stay
    inside the vectors directory, so a manifest can't make the suite read `/etc/passwd` or `/dev/zero`.
    """
    path = root / MANIFEST
    if root.exists() and not root.is_dir():
        raise VectorsError(f"{root}: not a directory; expected a vectors directory (holding {MANIFEST})")
    if not path.exists():
        raise VectorsError(f"{path}: no manifest here; is {root} a vectors directory?")
    data = schema.read_json(path, "vectors manifest", VectorsError, "; the manifest is damaged or truncated")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise VectorsError(f"{path}: not a {SCHEMA} manifest")
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise VectorsError(
            f"{path}: unknown schema_version {version!r}; this reader understands versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    where = schema.Where(str(path), error=VectorsError)
    files = schema.table(where, data.get("files"), "files", f"a table holding the {INDEX} entry")
    if INDEX not in files:
        raise where.fail(f"missing the {INDEX} entry", "files")
    _file_spec(where, files[INDEX], f"files.{INDEX}", with_path=False)
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list):
        raise where.expected("cases", "a list of case entries", raw_cases)
    cases: dict[str, CaseEntry] = {}
    for number, raw in enumerate(raw_cases, 1):
        at = where.at(f"case entry #{number}")
        entry = schema.table(at, raw, "", "a case entry (id, case, tolerance, files)")
        keys = ("id", "case", "tolerance", "files") + (("tolerance_backward",) if version >= 2 else ())
        schema.check_keys(at, entry, keys, ("id", "case", "tolerance", "files"))
        try:
            case = Case.from_dict(schema.table(at, entry["case"], "case"))
        except (TypeError, CaseError) as error:
            raise VectorsError(f"{path}: case entry #{number} is malformed: {error}") from None
        if case.id != entry["id"]:
            raise VectorsError(
                f"{path}: case entry #{number} is malformed: id {entry['id']} does not match its parameters ({case.id})"
            )
        at = where.at(f"case {case.id}")
        tolerance = schema.table(at, entry["tolerance"], "tolerance")
        for precision, record in tolerance.items():
            schema.table(at, record, f"tolerance.{precision}")
        backward = None
        if "tolerance_backward" in entry:
            backward = schema.table(at, entry["tolerance_backward"], "tolerance_backward")
            for precision, record in backward.items():
                atol = schema.table(
                    at,
                    schema.table(at, record, f"tolerance_backward.{precision}").get("atol"),
                    f"tolerance_backward.{precision}.atol",
                    "a table of gradient name = atol",
                )
                for name, value in atol.items():
                    schema.number(at, value, f"tolerance_backward.{precision}.atol.{name}")
        specs = schema.table(at, entry["files"], "files")
        for name, spec in specs.items():
            _file_spec(at, spec, f"files.{name}")
        cases[case.id] = CaseEntry(case, tolerance, specs, backward)
    return Manifest(root, data, cases)


def _read_checked(root: Path, spec: dict[str, Any], case_id: str | None) -> bytes:
    """A vector file's bytes after checking where it is, its length and its sha256 against the manifest.

    The length is checked before a byte is read (a declared size can't make us read /dev/zero until memory
    runs out), and the file must resolve to a regular file inside the vectors directory (a symlink out is refused).
    """
    path = root / spec["path"] if "path" in spec else root / INDEX
    about = f"case {case_id}" if case_id else "vectors index"
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise VectorsError(f"{path}: {about}: resolves to {resolved}, outside the vectors directory {root}")
    try:
        info = path.stat()
    except FileNotFoundError:
        raise VectorsError(f"{path}: {about}: file is missing") from None
    except OSError as error:
        raise VectorsError(f"{path}: {about}: can't read it: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise VectorsError(f"{path}: {about}: not a regular file")
    size = info.st_size
    if size < spec["bytes"]:
        raise VectorsError(f"{path}: {about}: truncated: {size} bytes, manifest says {spec['bytes']}")
    if size > spec["bytes"]:
        raise VectorsError(f"{path}: {about}: {size} bytes, manifest says {spec['bytes']}")
    with path.open("rb") as handle:
        blob = handle.read(spec["bytes"] + 1)  # one more: a file that grew since stat is caught too
    if len(blob) != spec["bytes"]:
        raise VectorsError(f"{path}: {about}: {len(blob)} bytes, manifest says {spec['bytes']}")
    digest = sha256(blob)
    if digest != spec["sha256"]:
        raise VectorsError(
            f"{path}: {about}: sha256 mismatch (file {digest[:16]}..., manifest {spec['sha256'][:16]}...): "
            "the file changed after the vectors were written"
        )
    return blob


def read_tensor(manifest: Manifest, case_id: str, name: str) -> np.ndarray:
    """One stored tensor, integrity-checked and decoded to its logical dtype."""
    spec = manifest.entry(case_id).files.get(name)
    if spec is None:
        raise VectorsError(f"{manifest.path}: case {case_id}: manifest lists no file '{name}'")
    blob = _read_checked(manifest.root, spec, case_id)
    path = manifest.root / spec["path"]
    try:
        array = read_npy(blob)
    except NpyError as error:
        raise VectorsError(f"{path}: case {case_id}: {error}") from None
    if array.dtype.str != np.dtype(spec["descr"]).newbyteorder("=").str or list(array.shape) != spec["shape"]:
        raise VectorsError(
            f"{path}: case {case_id}: holds {array.dtype.str} {list(array.shape)}, "
            f"manifest says {spec['descr']} {spec['shape']}"
        )
    return decode(array, spec["dtype"])


def check_integrity(manifest: Manifest, case_ids: list[str] | None = None) -> list[str]:
    """Every problem with the index and the listed cases' files (all cases by default), one message each."""
    problems = []
    try:
        _read_checked(manifest.root, manifest.data["files"][INDEX], None)
    except VectorsError as error:
        problems.append(str(error))
    for case_id in case_ids if case_ids is not None else list(manifest.cases):
        try:
            entry = manifest.entry(case_id)
            for name in entry.files:
                read_tensor(manifest, case_id, name)
        except VectorsError as error:
            problems.append(str(error))
    return problems


def load_case(manifest: Manifest, case_id: str) -> tuple[Weights, Inputs, GruOutput]:
    """What the engine's `reference` returns, read from the vectors instead of computed."""
    entry = manifest.entry(case_id)
    case = entry.case
    missing = [n for n in [*param_names(case), "x", *EXPECTED] if n not in entry.files]
    if case.initial_state and "h0" not in entry.files:
        missing.append("h0")
    if case.packed and "lengths" not in entry.files:
        missing.append("lengths")
    if missing:
        raise VectorsError(f"{manifest.path}: case {case_id}: manifest lists no file for {', '.join(missing)}")

    def read(name: str) -> np.ndarray:
        array = read_tensor(manifest, case_id, name)
        array.setflags(write=False)  # as case_data's arrays: an adapter must not write into its inputs
        return array

    weights = Weights({name: read(name) for name in param_names(case)})
    inputs = Inputs(
        x=read("x"),
        h0=read("h0") if case.initial_state else None,
        lengths=read("lengths") if case.packed else None,
    )
    return weights, inputs, GruOutput(output=read("expected_output"), h_n=read("expected_h_n"))


def gradient_names(case: Case) -> list[str]:
    """The gradients a backward check compares, in order: x, h0 (with an initial state), every parameter."""
    return ["x", *(["h0"] if case.initial_state else []), *param_names(case)]


def load_gradients(manifest: Manifest, case_id: str) -> tuple[Cotangents, dict[str, np.ndarray]] | None:
    """The backward check's cotangents and expected gradients, read from the vectors; None for vectors that hold
    none (schema version 1)."""
    entry = manifest.entry(case_id)
    if not any(name in entry.files for name in COTANGENTS):
        return None
    wanted = [*COTANGENTS, *(EXPECTED_GRADIENT + name for name in gradient_names(entry.case))]
    missing = [name for name in wanted if name not in entry.files]
    if missing:
        raise VectorsError(f"{manifest.path}: case {case_id}: manifest lists no file for {', '.join(missing)}")

    def read(name: str) -> np.ndarray:
        array = read_tensor(manifest, case_id, name)
        array.setflags(write=False)
        return array

    cotangents = Cotangents(output=read("cotangent_output"), h_n=read("cotangent_h_n"))
    return cotangents, {name: read(EXPECTED_GRADIENT + name) for name in gradient_names(entry.case)}


class VectorsReference:
    """The engine's `reference` callable backed by stored vectors; each case is read (and hashed) once.

    `gradients` is the backward check's reference (`Reference.load_backward`): None for a case the
    vectors hold no gradients for."""

    def __init__(self, root: Path) -> None:
        self.manifest = load_manifest(root)
        self._load = lru_cache(maxsize=64)(self._read)
        self._gradients = lru_cache(maxsize=64)(self._read_gradients)

    def _read(self, case_id: str) -> tuple[Weights, Inputs, GruOutput]:
        return load_case(self.manifest, case_id)

    def _read_gradients(self, case_id: str) -> tuple[Cotangents, dict[str, np.ndarray]] | None:
        return load_gradients(self.manifest, case_id)

    def __call__(self, case: Case) -> tuple[Weights, Inputs, GruOutput]:
        return self._load(case.id)

    def gradients(self, case: Case) -> tuple[Cotangents, dict[str, np.ndarray]] | None:
        return self._gradients(case.id)
