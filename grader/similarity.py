"""Pairs of submissions that share code, ratios or masks, for the staff to look at (not a verdict).

    python -m grader.similarity SUBMISSIONS_DIR --csv similarity.csv

``grader.batch`` writes the same ``similarity.csv`` beside its gradebook.  Three things are compared,
each pair of submissions once:

* ``hw2/pruning.py``, normalised: comments, docstrings, blank lines and the names of local variables
  do not count; what the released stubs already hold is left out, so two untouched stubs are not a pair;
* the ratios in ``configs/unstructured_0.80.yaml`` and ``configs/filter_0.40.yaml`` (the templates'
  untouched values are not a pair): the same layers, each ratio within ``RATIO_CLOSE``;
* the zero pattern of each handed-in model (``results/{Omp|Imp}_{type}_*.pt``).  Correct code with the
  same ratios gives the same OMP masks, so a mask match alone means little; it is listed for context.

Only files are read (YAML with ``safe_load``, models with ``weights_only=True``); no submission code runs.
"""
from __future__ import annotations

import argparse
import builtins
import csv
import difflib
import hashlib
import io
import itertools
import keyword
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

GRADER_ROOT = Path(__file__).resolve().parent.parent
STUB = GRADER_ROOT / "hw2" / "pruning.py"
CONFIGS = ("configs/unstructured_0.80.yaml", "configs/filter_0.40.yaml")
LABELS = ("Omp_unstructured", "Imp_unstructured", "Omp_filter", "Imp_filter")
CODE_SIMILAR = 0.90  # difflib ratio of the normalised student code from which a pair is listed
RATIO_CLOSE = 0.005  # ratios this close count as the same
MAX_MODEL_BYTES = 160 * 2**20  # larger files are not read (as the grader)
BUILTINS = frozenset(dir(builtins))
COLUMNS = ("submission_a", "submission_b", "what", "similarity", "detail")


@dataclass
class Fingerprint:
    """What one submission is compared by."""

    name: str
    code: list[str] = field(default_factory=list)  # normalised tokens the student wrote (stub tokens removed)
    ratios: dict = field(default_factory=dict)  # config path -> {layer: ratio}, untouched templates left out
    masks: dict = field(default_factory=dict)  # label -> sha256 of the zero pattern


def normalised_tokens(source: str, keep: frozenset[str] = frozenset()) -> list[str]:
    """Python tokens without comments, docstrings and layout; names that are not keywords, builtins, attribute
    names or in ``keep`` (the stub's own names) become ``_``, so renaming variables does not hide a copy.
    Text that does not tokenize: its words."""
    try:
        stream = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source.split()
    layout = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING,
              tokenize.ENDMARKER}
    statement_start = True  # a string token here is a docstring or a bare string statement
    tokens: list[str] = []
    for token in stream:
        if token.type in layout:
            statement_start = statement_start or token.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
            continue
        if token.type == tokenize.STRING and statement_start:
            continue
        statement_start = False
        text = token.string
        if (token.type == tokenize.NAME and not keyword.iskeyword(text) and text not in BUILTINS and text not in keep
                and not (tokens and tokens[-1] == ".")):
            text = "_"
        tokens.append(text)
    return tokens


def names_in(source: str) -> frozenset[str]:
    """Every identifier in ``source`` (the stub's: its functions, parameters and imports stay as they are)."""
    try:
        return frozenset(t.string for t in tokenize.generate_tokens(io.StringIO(source).readline)
                         if t.type == tokenize.NAME)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return frozenset()


def student_tokens(source: str, stub: str) -> list[str]:
    """The normalised tokens of ``source`` that the stub does not already have in the same place."""
    keep = names_in(stub)
    mine, given = normalised_tokens(source, keep), normalised_tokens(stub, keep)
    matcher = difflib.SequenceMatcher(None, given, mine, autojunk=False)
    written: list[str] = []
    for op, _, _, j1, j2 in matcher.get_opcodes():
        if op in ("replace", "insert"):
            written.extend(mine[j1:j2])
    return written


def read_ratios(path: Path) -> dict | None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(errors="replace"))
    except (OSError, yaml.YAMLError):
        return None
    ratios = data.get("prune_ratios") if isinstance(data, dict) else None
    if not isinstance(ratios, dict):
        return None
    return {str(k): float(v) for k, v in ratios.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def zero_pattern_hash(path: Path) -> str | None:
    """sha256 of the zero pattern of every conv/linear weight in a model file, or None if it cannot be read."""
    import torch

    from hw2.checkpoint import CheckpointError, load_checkpoint

    try:
        state_dict, _ = load_checkpoint(path, max_bytes=MAX_MODEL_BYTES)
    except CheckpointError:
        return None
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if name.endswith("weight") and isinstance(tensor, torch.Tensor) and tensor.dim() in (2, 4):
            digest.update(name.encode())
            digest.update((tensor == 0).to(torch.uint8).contiguous().numpy().tobytes())
    return digest.hexdigest()


def fingerprint(submission: Path, stub_source: str, templates: dict) -> Fingerprint:
    """Read one submission (the folder holding hw2/, or the one folder inside that does)."""
    from grader.conftest import locate_submission

    name = submission.name
    try:
        root = locate_submission(submission)
    except ValueError:
        return Fingerprint(name)
    found = Fingerprint(name)
    try:
        found.code = student_tokens((root / "hw2" / "pruning.py").read_text(errors="replace"), stub_source)
    except OSError:
        pass
    for config in CONFIGS:
        ratios = read_ratios(root / config)
        if ratios and ratios != templates.get(config):
            found.ratios[config] = ratios
    for label in LABELS:
        files = sorted((root / "results").glob(f"{label}_*.pt")) if (root / "results").is_dir() else []
        if len(files) == 1:
            digest = zero_pattern_hash(files[0])
            if digest is not None:
                found.masks[label] = digest
    return found


def same_ratios(a: dict, b: dict) -> str | None:
    """How two ratio tables match ("identical", or every layer within RATIO_CLOSE), or None when they do not."""
    if a == b:
        return "identical"
    if set(a) == set(b) and all(abs(a[k] - b[k]) <= RATIO_CLOSE for k in a):
        return f"every layer within {RATIO_CLOSE}"
    return None


def code_similarity(a: list[str], b: list[str]) -> float:
    """difflib's ratio of two token lists; 0 when either is empty or a cheap upper bound is already below
    CODE_SIMILAR (most pairs of a class stop there)."""
    if not a or not b:
        return 0.0
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < CODE_SIMILAR or matcher.quick_ratio() < CODE_SIMILAR:
        return 0.0
    return matcher.ratio()


def compare_pairs(prints: list[Fingerprint]) -> list[dict]:
    """One row per flagged (pair, what), most similar first."""
    rows = []
    for a, b in itertools.combinations(prints, 2):
        def flag(what: str, similarity: float, detail: str) -> None:
            rows.append({"submission_a": a.name, "submission_b": b.name, "what": what, "similarity": similarity,
                         "detail": detail})

        ratio = code_similarity(a.code, b.code)
        if ratio >= CODE_SIMILAR:
            flag("hw2/pruning.py", ratio, "identical after normalising" if a.code == b.code
                 else f"{len(a.code)} and {len(b.code)} tokens written")
        for config in sorted(set(a.ratios) & set(b.ratios)):
            detail = same_ratios(a.ratios[config], b.ratios[config])
            if detail is not None:
                flag(config, 1.0, detail)
        for label in LABELS:
            if label in a.masks and a.masks[label] == b.masks.get(label):
                flag(f"{label} mask", 1.0, "identical zero pattern")
    rows.sort(key=lambda r: (-r["similarity"], r["submission_a"], r["submission_b"], r["what"]))
    return rows


def find_similar(submissions: list[Path], stub: Path = STUB) -> list[dict]:
    """The flagged pairs among ``submissions`` (folders), compared against the released ``stub``."""
    stub_source = stub.read_text() if stub.is_file() else ""
    templates = {config: read_ratios(GRADER_ROOT / config) for config in CONFIGS}
    return compare_pairs([fingerprint(Path(s), stub_source, templates) for s in submissions])


def write_similarity(rows: list[dict], path: Path) -> None:
    """``similarity.csv``: submission_a, submission_b, what, similarity (0-1, 3 decimals), detail."""
    from hw2.checkpoint import atomic_write_bytes

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "similarity": f"{row['similarity']:.3f}"})
    atomic_write_bytes(Path(path), lambda f: f.write(text.getvalue().encode()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.similarity", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", type=Path, help="folder with one sub-folder per submission")
    parser.add_argument("--csv", type=Path, default=Path("similarity.csv"), help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    submissions = sorted(p for p in args.submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    rows = find_similar(submissions)
    write_similarity(rows, args.csv)
    print(f"{len(rows)} flagged pairs among {len(submissions)} submissions: {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
