"""Typed records that stages exchange as JSONL, and the file helpers every stage uses.

Each stage of iteration t reads the previous stage's file in DIR/iter_<t>/ and writes its own
with an atomic rename, then a `.done` marker; a rerun skips stages whose marker exists.
Generation stages also append finished chunks to `<name>.partial` so a killed run resumes
mid-stage with the same per-chunk seeds, and so the same final file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from srlm.run import faults


class InputError(ValueError):
    """Bad user input, reported with the file and line so the user can fix it."""


@dataclass
class PromptRecord:
    id: str
    prompt: str
    source: str  # "self_instruct" | "file" | "seed"
    iteration: int
    # Verifiable prompts (prompts.verifiable_max): IFEval's instruction ids and their arguments,
    # in IFEval's input format; None on plain prompts.
    instruction_id_list: list[str] | None = None
    kwargs: list[dict] | None = None


@dataclass
class CandidateRecord:
    id: str
    prompt_id: str
    prompt: str
    response: str
    index: int
    num_tokens: int
    finish_reason: str  # "stop" | "length"


@dataclass
class JudgmentRecord:
    id: str
    candidate_id: str
    prompt_id: str
    sample: int
    text: str
    score: float | int | None  # parsed int, or the expected score in judge.scoring=expected
    error: str | None  # why the text has no valid score line
    parsed_score: int | None = None  # the parsed `Score: N` whatever the mode
    mode: str = "parsed"  # "parsed" | "expected": how `score` was obtained
    score_probs: list[float] | None = None  # expected mode: P(score digit = 0..5)
    score_forced: bool = False  # expected mode: read after a forced `Score: ` prefix
    finish_reason: str | None = None  # "stop" | "length" | "repetition"
    # Verifiable prompts: the checker's strict verdict per instruction and the fraction followed;
    # judge_score is the rubric's score of this judgment (None under judge.source=verifier), so
    # `score` (what the pairs use) may be the checker's, the rubric's or their hybrid.
    verifier: list[bool] | None = None
    verifier_score: float | None = None
    judge_score: float | int | None = None


@dataclass
class PairRecord:
    id: str
    prompt_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_id: str
    rejected_id: str
    score_chosen: float | None  # None where no judge scored the pair (SPIN's gold, human pairs)
    score_rejected: float | None
    chosen_length: int
    rejected_length: int
    # Weight c_i of the pair in weighted DPO (engines/weighted_dpo.py; CREAM's consistency); None = plain
    # DPO. Files written before it existed load unchanged.
    confidence: float | None = None


@dataclass
class ImplicitRewardRecord:
    """CREAM: a candidate's DPO implicit reward log pi(y|x) - log pi_ref(y|x) (summed over the
    answer's tokens) under the current model and under the previous one (methods/cream.py)."""
    candidate_id: str
    prompt_id: str
    current: float
    previous: float


@dataclass
class MetaJudgmentRecord:
    """Meta-Rewarding: one meta-judgment, M_t comparing two of its own judgments of one candidate
    (judgment_a shown first, as "Judgement A"). verdict "A" | "B" | None (undecided: counts
    nowhere) is what judge pairs use: the parsed verdict line (meta.scoring parsed), or the more
    probable letter after `Winner: Judgement ` (expected; a tie stays None)."""
    id: str
    prompt_id: str
    candidate_id: str
    judgment_a: str  # JudgmentRecord ids
    judgment_b: str
    text: str
    verdict: str | None
    error: str | None  # why the text has no valid verdict line (kept in expected mode too)
    finish_reason: str | None = None
    parsed_verdict: str | None = None  # the parsed verdict line, whatever the mode
    mode: str = "parsed"  # how `verdict` was obtained: "parsed" | "expected"
    verdict_probs: list[float] | None = None  # expected mode: [P(A), P(B)], normalised over the two
    verdict_forced: bool = False  # expected mode: read after a forced prefix (the text had no verdict line)


@dataclass
class JudgePairRecord(PairRecord):
    """Meta-Rewarding: a judge-training pair. prompt = the judge prompt (the rubric request for the
    candidate), chosen / rejected = the highest / lowest rated judgment texts; score_chosen /
    score_rejected are their Bradley-Terry log-strengths; lengths in characters as for PairRecord."""
    candidate_id: str = ""
    chosen_words: int = 0
    rejected_words: int = 0
    kind: str = "judge"


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    faults.point("atomic_write_text:before_rename", path)
    os.replace(tmp, path)
    faults.point("atomic_write_text:after_rename", path)


def _as_dict(rec: Any) -> dict:
    return dataclasses.asdict(rec) if dataclasses.is_dataclass(rec) else rec


def write_jsonl(path: str, records: Iterable[Any]) -> None:
    atomic_write_text(path, "".join(json.dumps(_as_dict(r), ensure_ascii=False) + "\n" for r in records))


def append_jsonl(path: str, records: Iterable[Any]) -> None:
    """Append whole records then fsync: a crash leaves at most one torn last line, which
    read_partial drops."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = "".join(json.dumps(_as_dict(r), ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    with open(path, "a+b") as f:
        # A kill mid-append leaves a torn last line: cut it before appending, or the next record
        # would be glued to it.
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(max(0, size - 1))
            if f.read(1) != b"\n":
                f.seek(0)
                keep = f.read().rfind(b"\n") + 1
                f.truncate(keep)
                f.seek(keep)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    faults.point("append_jsonl", path)


def utf8_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file; a byte that is not UTF-8 raises InputError naming the
    line and the byte offset in the file (decoded line by line: a text-mode decoder's offsets
    are relative to its buffer, and a '\n' byte never occurs inside a UTF-8 sequence)."""
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}:{lineno}: not UTF-8 at byte {offset + e.start}") from None
            offset += len(raw)
            yield lineno, line


def iter_jsonl(path: str) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed value); a malformed line, or bytes that are not UTF-8, raise
    InputError naming file and line (and, for bad bytes, their offset in the file)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: file not found")
    for lineno, line in utf8_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        yield lineno, obj


def read_jsonl(path: str, cls: type | None = None) -> list:
    out = []
    for lineno, obj in iter_jsonl(path):
        if cls is None:
            out.append(obj)
            continue
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object")
        fields = dataclasses.fields(cls)
        required = {f.name for f in fields if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
        missing = required - obj.keys()
        if missing:
            raise InputError(f"{path}:{lineno}: missing field(s) {', '.join(sorted(missing))}")
        out.append(cls(**{f.name: obj[f.name] for f in fields if f.name in obj}))
    return out


def read_partial(path: str) -> list[dict]:
    """Records of a `.partial` file; a torn final line from a crash is ignored."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return out


def marker(path: str) -> str:
    return path + ".done"


def is_done(path: str) -> bool:
    return os.path.exists(marker(path)) and os.path.exists(path)


def mark_done(path: str, info: dict | None = None) -> None:
    atomic_write_text(marker(path), json.dumps(info or {}, indent=1))


def read_json(path: str, default: Any = None) -> Any:
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def update_metrics(run_dir: str, group: str, values: dict) -> dict:
    """Merge `values` into DIR/metrics.json under `group` (e.g. "iter_1" or "sft")."""
    path = os.path.join(run_dir, "metrics.json")
    metrics = read_json(path, {})
    metrics.setdefault(group, {}).update(values)
    write_json(path, metrics)
    return metrics
