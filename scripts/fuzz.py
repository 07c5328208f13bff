"""Fuzz tosaic's reader and importer against LiteRT: mutate real models, run each on both, classify.

    python scripts/fuzz.py --cases 100000 --seed 1      # the long run
    python scripts/fuzz.py --cases 2000 --json out.json   # what the CI sample runs

Each case takes one model of tests/data and applies one mutation: byte-level (bit flips, byte overwrites,
odd int32 values, truncation, zeroed spans, copied spans) or structure-aware (a field of the schema found by
the verifier's walk: tensor shapes, types, buffer indices, quantization, op codes, op inputs and outputs,
builtin options and their union type, vector lengths, constant data). The mutated bytes go to two worker
processes at once: tosaic (read, import, TOSA interpreter, one run) and LiteRT with its reference kernels
(`BUILTIN_REF`, one invoke), on the same inputs. A worker that dies (LiteRT aborts on some inputs) or
passes the time limit is restarted. Outcomes:

- agree: both ran, every output equal bit for bit;        disagree: both ran, an output differs (a bug);
- both refuse;  tosaic refuses more: LiteRT ran it, tosaic refused with one of its own errors (allowed,
  each counted by message);  tosaic accepts more: tosaic ran what LiteRT refuses (a bug unless
  EXPLAINED names the reason);
- crash: tosaic raised something other than a TosaicError, or its worker died;  hang: tosaic passed the
  time limit.

Two more families go to tosaic alone. MLIR: the TOSA text of a seed model, mutated (characters, numbers,
lines, truncation), parsed with `tosaic.parse_mlir` and run on the interpreter: "ran" or "refused", never a
crash. Saved models: a seed compiled for this CPU and saved, one of its files damaged (bit flips, overwrites,
truncation), then `tosaic.load` and one run: "refused" (the digest) or "agree" with the undamaged model.
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import re
import shutil
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tosaic.importers.tflite.verifier import Site, verify_model  # noqa: E402

SEED_MODELS = sorted(p for p in glob.glob(str(ROOT / "tests" / "data" / "*.tflite"))
                     if Path(p).stat().st_size < 100_000)

# Acceptances of a model LiteRT refuses that are understood: (pattern on LiteRT's message, why).
EXPLAINED: list[tuple[str, str]] = [
    (r"Rsqrt is only defined for positive values",
     "LiteRT's int8 RSQRT fails the invocation for an input below the zero point (a value outside the "
     "function's domain, not a model it refuses); tosaic's TABLE gives 127 there (ops/math.py rsqrt)"),
    (r"Sqrt is only defined for non-negative values",
     "LiteRT's int8 SQRT fails the invocation for an input below the zero point (outside the function's domain, "
     "not a model it refuses); tosaic's TABLE gives sqrt(0)'s output there (ops/math.py sqrt)"),
    (r"div.cc:\d+ data\[i\] != zero_point",
     "LiteRT's quantized DIV fails the invocation when a divisor is its zero point (a real 0: an input the "
     "function has no value for, not a model it refuses); tosaic divides by 1 there "
     "(ops/math.py div)"),
    (r"^UnicodeDecodeError",
     "LiteRT's Python binding cannot decode a tensor name that is not UTF-8 (its C++ runtime reads the model); "
     "tosaic decodes names with replacement characters"),
]

MEMORY_LIMIT = 8 << 30  # per worker: a mutated shape asking for terabytes fails fast instead of swapping
MAX_INPUT_VALUES = 1 << 24  # a model whose inputs are larger is compiled but not run ("too large to run")

# ------------------------------------------------------------------------------------------ mutations

def registrar(table: dict):
    """A decorator factory: `@registrar(table)(name)` keeps the function in `table` under `name`."""
    def named(name):
        def register(fn):
            table[name] = fn
            return fn
        return register
    return named


MUTATIONS = {}
mutation = registrar(MUTATIONS)


INT32_EDGES = [0, 1, -1, 2, 3, 4, 7, 8, 16, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, -2**31, 2**30]
FLOAT_EDGES = [0.0, -0.0, -1.0, 1e-38, 1e-45, 1e38, float("inf"), float("-inf"), float("nan"), 1.0, 0.5, 2.0 ** -20]


def _put(buf: bytearray, pos: int, size: int, value: int) -> None:
    buf[pos:pos + size] = (value % (1 << (8 * size))).to_bytes(size, "little")


def _edge(rng, size: int) -> int:
    value = int(rng.choice(INT32_EDGES)) if rng.random() < 0.8 else int(rng.integers(-300, 300))
    return value if size >= 4 else value % (1 << (8 * size))


@mutation("bitflip")
def _bitflip(rng, buf, sites):
    for _ in range(int(rng.integers(1, 5))):
        buf[int(rng.integers(len(buf)))] ^= 1 << int(rng.integers(8))
    return buf


@mutation("byte overwrite")
def _bytes(rng, buf, sites):
    for _ in range(int(rng.integers(1, 9))):
        buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
    return buf


@mutation("odd int32")
def _int32(rng, buf, sites):
    _put(buf, int(rng.integers(len(buf) // 4)) * 4, 4, _edge(rng, 4))
    return buf


@mutation("truncation")
def _truncate(rng, buf, sites):
    return buf[:int(rng.integers(len(buf)))]


@mutation("zeroed span")
def _zero(rng, buf, sites):
    start = int(rng.integers(len(buf)))
    end = min(len(buf), start + int(rng.integers(1, 64)))
    buf[start:end] = bytes(end - start)
    return buf


@mutation("copied span")
def _copy(rng, buf, sites):
    length = int(rng.integers(1, 64))
    source, target = int(rng.integers(len(buf))), int(rng.integers(len(buf)))
    piece = bytes(buf[source:source + length])[:len(buf) - target]
    buf[target:target + len(piece)] = piece
    return buf


def _sites(sites, pattern):
    return [s for s in sites if re.search(pattern, s.path)]


def _scalar_mutation(pattern, value=None):
    def mutate(rng, buf, sites):
        chosen = _sites(sites, pattern)
        if not chosen:
            return None
        site = chosen[int(rng.integers(len(chosen)))]
        pos = site.pos if site.length < 0 else site.pos + 4 + site.size * int(rng.integers(max(site.length, 1)))
        if site.length == 0:
            return None
        if site.size == 4 and re.search(r"\.(scale|min|max)$", site.path):
            buf[pos:pos + 4] = struct.pack("<f", float(rng.choice(FLOAT_EDGES)) if rng.random() < 0.7
                                           else float(rng.standard_normal()) * 0.1)
        else:
            _put(buf, pos, site.size, value(rng, site) if value else _edge(rng, site.size))
        return buf
    return mutate


def _small_index(rng, site):
    return int(rng.integers(-2, 12)) if rng.random() < 0.9 else _edge(rng, site.size)


MUTATIONS["tensor shape"] = _scalar_mutation(r"tensors\[\d+\]\.shape$",
                                             lambda rng, s: int(rng.choice([0, 1, 2, 3, 5, 8, 16, -1, 2**20])))
MUTATIONS["tensor type"] = _scalar_mutation(r"tensors\[\d+\]\.type$", lambda rng, s: int(rng.integers(0, 24)))
MUTATIONS["tensor buffer"] = _scalar_mutation(r"tensors\[\d+\]\.buffer$", _small_index)
MUTATIONS["quantization"] = _scalar_mutation(r"quantization\.(scale|zero_point|quantized_dimension)$")
MUTATIONS["op code"] = _scalar_mutation(r"operator_codes\[\d+\]\.(builtin_code|deprecated_builtin_code|version)$",
                                        lambda rng, s: int(rng.integers(0, 210 if s.size == 4 else 128)))
MUTATIONS["op inputs/outputs"] = _scalar_mutation(r"operators\[\d+\]\.(inputs|outputs)$", _small_index)
MUTATIONS["graph inputs/outputs"] = _scalar_mutation(r"subgraphs\[\d+\]\.(inputs|outputs)$", _small_index)
MUTATIONS["builtin options"] = _scalar_mutation(r"builtin_options \(\w+\)\.\w+$")
MUTATIONS["options union type"] = _scalar_mutation(r"builtin_options_type$", lambda rng, s: int(rng.integers(0, 130)))


@mutation("vector length")
def _vector_length(rng, buf, sites):
    chosen = [s for s in sites if s.length >= 0]
    site = chosen[int(rng.integers(len(chosen)))]
    _put(buf, site.pos, 4, int(rng.integers(0, site.length + 3)) if rng.random() < 0.9 else _edge(rng, 4))
    return buf


@mutation("constant data")
def _weights(rng, buf, sites):
    chosen = [s for s in _sites(sites, r"buffers\[\d+\]\.data$") if s.length > 0]
    if not chosen:
        return None
    site = chosen[int(rng.integers(len(chosen)))]
    start = site.pos + 4
    buf[start:start + site.length] = rng.integers(0, 256, site.length, dtype=np.uint8).tobytes()
    return buf


def mutate(rng, model: bytes, kind: str) -> bytes | None:
    sites: list[Site] = []
    verify_model(model, sites)
    result = MUTATIONS[kind](rng, bytearray(model), sites)
    return None if result is None else bytes(result)


MLIR_MUTATIONS = {}
mlir_mutation = registrar(MLIR_MUTATIONS)


@mlir_mutation("mlir characters")
def _mlir_characters(rng, text: str) -> str:
    chars = list(text)
    for _ in range(int(rng.integers(1, 5))):
        at, new = int(rng.integers(len(chars))), chr(int(rng.choice([int(rng.integers(32, 127)), 10, 0x3b1])))
        choice = int(rng.integers(3))
        if choice == 0:
            del chars[at]
        elif choice == 1:
            chars.insert(at, new)
        else:
            chars[at] = new
    return "".join(chars)


@mlir_mutation("mlir number")
def _mlir_number(rng, text: str) -> str:
    numbers = list(re.finditer(r"-?\d+(\.\d+)?(e[-+]?\d+)?", text))
    found = numbers[int(rng.integers(len(numbers)))]
    value = str(rng.choice(INT32_EDGES + [2**63, -2**63 - 1, 10**30])) if rng.random() < 0.8 else \
        str(rng.choice(["1.5", "-0.0", "1e309", "nan", "0x7F"]))
    return text[:found.start()] + value + text[found.end():]


@mlir_mutation("mlir line")
def _mlir_line(rng, text: str) -> str:
    lines = text.split("\n")
    i, j = int(rng.integers(len(lines))), int(rng.integers(len(lines)))
    choice = int(rng.integers(3))
    if choice == 0:
        del lines[i]
    elif choice == 1:
        lines.insert(i, lines[j])
    else:
        lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


@mlir_mutation("mlir truncation")
def _mlir_truncation(rng, text: str) -> str:
    return text[:int(rng.integers(len(text)))]


SAVED_DAMAGE = ("bitflip", "byte overwrite", "truncation", "zeroed span")


def damage_saved(rng, directory: Path) -> str:
    """Damage one file of a saved model in place with one byte-level mutation; returns what was done."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    path = files[int(rng.integers(len(files)))]
    kind = SAVED_DAMAGE[int(rng.integers(len(SAVED_DAMAGE)))]
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(MUTATIONS[kind](rng, data, []) if data else data))
    return f"{kind} of {path.relative_to(directory)}"


# ------------------------------------------------------------------------------------------ workers


def case_inputs(specs, seed: int) -> list[np.ndarray]:
    """The inputs both runtimes get: the same arrays for the same (shape, dtype) list and seed."""
    rng = np.random.default_rng(seed)
    arrays = []
    for shape, dtype in specs:
        dtype = np.dtype(dtype)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype))
        elif dtype.kind == "f":
            arrays.append((rng.standard_normal(shape) * 4).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.random(shape) < 0.5)
        else:
            raise ValueError(f"input dtype {dtype}")
    return arrays


def _limit_memory():
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass


def _answer(specs, outputs):
    return {"status": "ok", "specs": [(list(s), str(d)) for s, d in specs],
            "outputs": [np.asarray(o) for o in outputs]}


def _total(specs) -> int:
    return sum(int(np.prod(shape, dtype=np.int64)) for shape, _ in specs)


def tosaic_worker(conn):
    _limit_memory()
    import tosaic

    while True:
        family, data, seed = conn.recv()
        try:
            if family == "tflite":
                model = tosaic.compile(tosaic.import_tflite(data), "interp")
            elif family == "mlir":
                model = tosaic.compile(tosaic.parse_mlir(data), "interp")
            else:
                model = tosaic.load(data)
            specs = [(tuple(i.shape), np.dtype(i.dtype)) for i in model.inputs]
            if _total(specs) > MAX_INPUT_VALUES:
                conn.send({"status": "too large", "message": f"inputs {specs}"})
                continue
            conn.send(_answer(specs, model.run(case_inputs(specs, seed))))
        except tosaic.TosaicError as error:
            conn.send({"status": "refused", "message": f"{type(error).__name__}: {error}"})
        except MemoryError as error:   # past the worker's memory limit: a resource, not a bug
            conn.send({"status": "too large", "message": f"MemoryError: {error}"})
        except Exception as error:
            frames = traceback.extract_tb(error.__traceback__)
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
            conn.send({"status": "crash", "message": f"{type(error).__name__} at {where}: {error}"})


def litert_worker(conn):
    _limit_memory()
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def interpreter(data: bytes):
        try:
            return Interpreter(model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
                               num_threads=1)
        except ValueError as error:
            if "Didn't find op for builtin opcode" not in str(error):
                raise
        # A version the reference resolver lacks but the default one registers (TILE 3 as the converter
        # writes it): the default resolver's kernels, without XNNPACK, are what LiteRT runs such a model on.
        return Interpreter(model_content=data, num_threads=1,
                           experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)

    while True:
        _, data, seed = conn.recv()
        try:
            interp = interpreter(data)
            interp.allocate_tensors()
            details = interp.get_input_details()
            specs = [(tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"])) for d in details]
            if _total(specs) > MAX_INPUT_VALUES:
                raise ValueError(f"inputs {specs}: more values than the fuzzer makes")
            for d, x in zip(details, case_inputs(specs, seed)):
                interp.set_tensor(d["index"], x)
            interp.invoke()
            conn.send(_answer(specs, [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]))
        except Exception as error:
            conn.send({"status": "refused", "message": f"{type(error).__name__}: {error}"})


class Worker:
    """A persistent worker process, restarted when it dies or passes the time limit."""

    def __init__(self, target):
        self.target = target
        self.process = None
        self.conn = None

    def start(self):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        process = context.Process(target=self.target, args=(child,), daemon=True)
        process.start()
        self.process = process
        child.close()

    def send(self, family: str, data, seed: int) -> None:
        if self.process is None or not self.process.is_alive():
            self.start()
        self.conn.send((family, data, seed))

    def receive(self, timeout: float) -> dict:
        try:
            if self.conn.poll(timeout):
                return self.conn.recv()
        except (EOFError, ConnectionError):
            self.process.join(5)
            return {"status": "died", "message": f"worker exit code {self.process.exitcode}"}
        self.stop()
        return {"status": "hang", "message": f"no answer in {timeout:g} s"}

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.process = None


# ------------------------------------------------------------------------------------------ classification


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


def classify(ours: dict, theirs: dict) -> tuple[str, str]:
    """(outcome, detail) for one case."""
    if ours["status"] in ("crash", "died"):
        return "crash", ours["message"]
    if ours["status"] == "hang":
        return "hang", ours["message"]
    if ours["status"] == "too large":
        return "too large to run", ours["message"]
    litert_ran = theirs["status"] == "ok"
    if ours["status"] == "refused":
        return ("tosaic refuses more", ours["message"]) if litert_ran else ("both refuse", ours["message"])
    if not litert_ran:
        message = theirs["message"]
        for pattern, why in EXPLAINED:
            if re.search(pattern, message):
                return "tosaic accepts more (explained)", why
        return "tosaic accepts more", message
    if ours["specs"] != theirs["specs"]:
        return "disagree", f"inputs {ours['specs']} vs LiteRT {theirs['specs']}"
    if len(ours["outputs"]) != len(theirs["outputs"]):
        return "disagree", f"{len(ours['outputs'])} outputs vs LiteRT {len(theirs['outputs'])}"
    for i, (a, b) in enumerate(zip(ours["outputs"], theirs["outputs"])):
        if not _same(a, b):
            return "disagree", f"output {i}: {a.dtype}{list(a.shape)} vs LiteRT {b.dtype}{list(b.shape)}"
    return "agree", ""


def classify_alone(ours: dict, reference: dict | None) -> tuple[str, str]:
    """(outcome, detail) for an MLIR case (reference None) or a damaged saved model."""
    if ours["status"] in ("crash", "died", "hang"):
        return ("hang" if ours["status"] == "hang" else "crash"), ours["message"]
    if ours["status"] == "refused":
        return "refused", ours["message"]
    if ours["status"] == "too large":
        return "too large to run", ours["message"]
    if reference is None:
        return "ran", ""
    same = len(ours["outputs"]) == len(reference["outputs"]) and all(
        _same(a, b) for a, b in zip(ours["outputs"], reference["outputs"]))
    return ("agree", "") if same else ("disagree", "a damaged saved model ran and answered differently")


FAILURES = ("crash", "hang", "disagree", "tosaic accepts more")


SAVED_SEEDS = ("op_add_same.tflite", "op_conv2d_s1_same_relu.tflite")
FAMILY_SHARES = {"tflite": 0.8, "mlir": 0.1, "saved": 0.1}


def _saved_seeds(ours: Worker, root: Path, timeout: float) -> list[tuple[Path, dict]]:
    """The saved-model seeds, compiled for this CPU in the tosaic worker, with their undamaged answers."""
    import tosaic

    seeds = []
    for name in SAVED_SEEDS:
        directory = root / name.removesuffix(".tflite")
        tosaic.compile(ROOT / "tests" / "data" / name, target="cpu").save(directory)
        ours.send("saved", str(directory), 0)
        answer = ours.receive(max(timeout, 300))
        if answer["status"] != "ok":
            raise RuntimeError(f"the undamaged saved model {name} does not run: {answer['message']}")
        seeds.append((directory, answer))
    return seeds


def _exchange(workers, family: str, data, input_seed: int, timeout: float) -> list[dict]:
    for worker in workers:
        worker.send(family, data, input_seed)
    answers = [worker.receive(timeout) for worker in workers]
    for i, worker in enumerate(workers):
        if answers[i]["status"] == "died":
            # A worker may die of what an earlier case did to its memory (LiteRT does, now and then, on a
            # corrupt model): the case counts only if a fresh worker dies on it too.
            worker.send(family, data, input_seed)
            answers[i] = worker.receive(timeout)
    return answers


def fuzz(cases: int, seed: int, timeout: float = 20.0, progress=None) -> dict:
    """Run `cases` fixed-seed cases; returns the table by mutation kind and outcome and each failure."""
    import tosaic

    rng = np.random.default_rng(seed)
    models = [Path(p).read_bytes() for p in SEED_MODELS]
    names = [Path(p).name for p in SEED_MODELS]
    texts = [str(tosaic.import_tflite(m)) for m in models]
    families, shares = list(FAMILY_SHARES), list(FAMILY_SHARES.values())
    ours, theirs = Worker(tosaic_worker), Worker(litert_worker)
    table: dict[str, Counter] = defaultdict(Counter)
    failures, refusals = [], Counter()
    scratch = Path(tempfile.mkdtemp(prefix="tosaic-fuzz-"))
    try:
        saved = _saved_seeds(ours, scratch, timeout)
        for case in range(cases):
            family = families[int(rng.choice(len(families), p=shares))]
            which = int(rng.integers(len(models)))
            input_seed = int(rng.integers(2**31))
            if family == "tflite":
                kinds = sorted(MUTATIONS)
                kind = kinds[int(rng.integers(len(kinds)))]
                data = mutate(rng, models[which], kind)
                if data is None:
                    kind = "bitflip"
                    data = mutate(rng, models[which], kind)
                outcome, detail = classify(*_exchange((ours, theirs), family, data, input_seed, timeout))
                model, evidence = names[which], data.hex()
            elif family == "mlir":
                kinds = sorted(MLIR_MUTATIONS)
                kind = kinds[int(rng.integers(len(kinds)))]
                data = MLIR_MUTATIONS[kind](rng, texts[which])
                outcome, detail = classify_alone(_exchange((ours,), family, data, input_seed, timeout)[0], None)
                model, evidence = names[which], data
            else:
                kind = "saved model damage"
                original, reference = saved[int(rng.integers(len(saved)))]
                directory = scratch / f"case{case}"
                shutil.copytree(original, directory)   # Numba's cache too: an undamaged copy loads warm
                what = damage_saved(rng, directory)
                answer = _exchange((ours,), family, str(directory), 0, timeout)[0]
                shutil.rmtree(directory, ignore_errors=True)
                outcome, detail = classify_alone(answer, reference)
                model, evidence = f"{original.name} ({what})", None
            table[kind][outcome] += 1
            if outcome in FAILURES:
                failures.append({"case": case, "model": model, "mutation": kind, "outcome": outcome,
                                 "detail": detail, "bytes": evidence})
            elif outcome == "tosaic refuses more":
                refusals[re.sub(r"\d+", "N", detail)[:120]] += 1
            if progress is not None:
                progress(case)
    finally:
        ours.stop()
        theirs.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"cases": cases, "seed": seed, "table": {k: dict(v) for k, v in sorted(table.items())},
            "failures": failures, "refusals": dict(refusals.most_common())}


OUTCOMES = ("agree", "both refuse", "tosaic refuses more", "tosaic accepts more (explained)", "ran", "refused",
            "too large to run") + FAILURES


def markdown(report: dict) -> str:
    columns = [o for o in OUTCOMES if any(o in row for row in report["table"].values())]
    lines = [f"| mutation | {' | '.join(columns)} |", "|---|" + "---:|" * len(columns)]
    totals = Counter()
    for kind, row in report["table"].items():
        totals.update(row)
        lines.append(f"| {kind} | " + " | ".join(str(row.get(c, 0)) for c in columns) + " |")
    lines.append("| **all** | " + " | ".join(f"**{totals.get(c, 0)}**" for c in columns) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per case and runtime")
    parser.add_argument("--json", type=Path, help="write the whole report (failing cases' bytes included)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        from tqdm import tqdm
        bar = tqdm(total=args.cases, disable=not sys.stderr.isatty())
    except ImportError:
        bar = None
    report = fuzz(args.cases, args.seed, args.timeout, (lambda _: bar.update()) if bar else None)
    report["seconds"] = round(time.monotonic() - started, 1)
    if bar:
        bar.close()
    print(f"{args.cases} cases, seed {args.seed}, {report['seconds']} s, {len(SEED_MODELS)} seed models\n")
    print(markdown(report))
    if report["refusals"]:
        print("\ntosaic refuses, LiteRT runs (messages, numbers as N):")
        for message, count in list(report["refusals"].items())[:30]:
            print(f"  {count:6d}  {message}")
    for failure in report["failures"][:40]:
        print(f"\nFAIL case {failure['case']} {failure['model']} [{failure['mutation']}] {failure['outcome']}: "
              f"{failure['detail']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
