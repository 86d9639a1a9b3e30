"""Loading seed and evaluation data, with errors that name the file and line.

Seed data (paper section 3.1):
- IFT: instruction -> good response. JSONL {prompt, response} or {messages: [user, assistant]},
  Open Assistant trees ('oasst:PATH': first-turn prompts with their top-ranked reply), or a
  Hugging Face dataset ('hf:NAME[:SPLIT]').
- EFT: judge prompt -> justification + `Score: N`. JSONL {prompt, response, judgment, score}
  (rendered through the judge template) or {messages: [user, assistant]} already rendered.
Evaluation data: human pairwise preferences (generic JSONL, Open Assistant ranks, PandaLM
annotators) and prompt sets (JSONL, MT-Bench question.jsonl, AlpacaEval).
Ranked groups: a prompt with its replies best-first as humans ranked them (Open Assistant trees,
'embedded:oasst', or pairwise files), what EFT building judges (loop/eft_build.py) and human
preference pairs are made of (methods/dpo_human.py); checks.py reads them with load_groups too.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

from srlm.data import rubric
from srlm.run.config import EMBEDDED_EFT, EMBEDDED_EVAL_PROMPTS, EMBEDDED_IFT
from srlm.run.records import InputError, iter_jsonl

EMBEDDED_FILES = {
    EMBEDDED_IFT: ["ift_a.jsonl", "ift_b.jsonl"],
    EMBEDDED_EFT: ["eft_a.jsonl", "eft_b.jsonl"],
    EMBEDDED_EVAL_PROMPTS: ["eval_prompts.jsonl"],
}


@dataclass
class IFTExample:
    prompt: str
    response: str


@dataclass
class EFTExample:
    prompt: str  # the rendered judge prompt
    judgment: str  # justification ending in `Score: N`
    score: int


@dataclass
class HumanPair:
    id: str
    prompt: str
    response_a: str
    response_b: str
    label: str  # "a" | "b" | "tie"
    category: str = ""  # for per-category breakdowns when a file mixes sources


def embedded_path(name: str) -> list[str]:
    root = importlib.resources.files("srlm.seed")
    return [str(root.joinpath(f)) for f in EMBEDDED_FILES[name]]


PREFIXES = ("oasst:", "pandalm:", "mt_bench:", "alpaca_eval:")


def source_files(source: str) -> list[str]:
    """The local files a data source reads (for input checks and provenance digests); a
    Hugging Face dataset ('hf:...') has none."""
    if source in EMBEDDED_FILES:
        return embedded_path(source)
    if source == "embedded:human_prefs":
        return [str(importlib.resources.files("srlm.seed").joinpath("human_prefs.jsonl"))]
    if source == "embedded:oasst":
        return [str(importlib.resources.files("srlm.seed").joinpath("oasst", "en_100_tree.jsonl"))]
    if source == "embedded:judge_template":
        return [str(importlib.resources.files("srlm.seed").joinpath("judge_template.txt"))]
    if source.startswith("hf:"):
        return []
    for prefix in PREFIXES:
        if source.startswith(prefix):
            return [source[len(prefix):]]
    return [source]


def _rows(source: str) -> Iterator[tuple[str, Any]]:
    """(location, record) for a JSONL file, an embedded file set, or 'hf:NAME[:SPLIT]'."""
    if source in EMBEDDED_FILES:
        for path in embedded_path(source):
            for lineno, obj in iter_jsonl(path):
                yield f"{path}:{lineno}", obj
    elif source.startswith("hf:"):
        name, _, split = source[3:].partition(":")
        try:
            import datasets

            ds = datasets.load_dataset(name, split=split or "train")
        except Exception as e:  # noqa: BLE001 - any hub/offline failure becomes one clear line
            raise InputError(f"{source}: cannot load Hugging Face dataset ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        for i, row in enumerate(ds):
            yield f"{source} row {i}", row
    else:
        for lineno, obj in iter_jsonl(source):
            yield f"{source}:{lineno}", obj


def _text(obj: dict, key: str, where: str) -> str:
    if key not in obj:
        raise InputError(f"{where}: missing field '{key}'")
    value = obj[key]
    if not isinstance(value, str):
        raise InputError(f"{where}: field '{key}' must be a string")
    if not value.strip():
        raise InputError(f"{where}: field '{key}' is empty")
    return value


def _from_messages(obj: dict, where: str) -> tuple[str, str]:
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
        raise InputError(f"{where}: 'messages' must be a list of {{role, content}} objects")
    turns = [m for m in msgs if m.get("role") != "system"]
    if len(turns) != 2 or turns[0].get("role") != "user" or turns[1].get("role") != "assistant":
        raise InputError(f"{where}: 'messages' must be one user turn then one assistant turn "
                         f"(got roles {[m.get('role') for m in msgs]})")
    return _text(turns[0], "content", where), _text(turns[1], "content", where)


def load_ift(sources: list[str], limit: int = 0) -> list[IFTExample]:
    out: list[IFTExample] = []
    for source in sources:
        if source.startswith("oasst:"):
            out += [IFTExample(p, r) for p, r in oasst_first_turn_best(source[6:])]
            continue
        for where, obj in _rows(source):
            if not isinstance(obj, dict):
                raise InputError(f"{where}: expected a JSON object")
            if "messages" in obj:
                p, r = _from_messages(obj, where)
            else:
                p, r = _text(obj, "prompt", where), _text(obj, "response", where)
            out.append(IFTExample(p, r))
    if not out:
        raise InputError(f"no IFT examples in {sources}")
    return out[:limit] if limit else out


def load_eft(sources: list[str], template: str, limit: int = 0) -> list[EFTExample]:
    out: list[EFTExample] = []
    for source in sources:
        for where, obj in _rows(source):
            if not isinstance(obj, dict):
                raise InputError(f"{where}: expected a JSON object")
            if "messages" in obj:
                prompt, judgment = _from_messages(obj, where)
            else:
                prompt = rubric.render(template, _text(obj, "prompt", where), _text(obj, "response", where))
                judgment = _text(obj, "judgment", where)
            parsed, err = rubric.parse_score(judgment)
            if parsed is None:
                raise InputError(f"{where}: judgment is not parseable ({err}); it must end with a 'Score: N' line")
            if "score" in obj and obj["score"] != parsed:
                raise InputError(f"{where}: field 'score' is {obj['score']!r} but the judgment says Score: {parsed}")
            out.append(EFTExample(prompt, judgment.strip(), parsed))
    return out[:limit] if limit else out


# --- Open Assistant trees -------------------------------------------------------------------

def _flag(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.lower() == "true")


def _rank(v: Any) -> int | None:
    if v is None or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _oasst_trees(path: str) -> Iterator[tuple[str, dict]]:
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), dict):
            raise InputError(f"{path}:{lineno}: not an Open Assistant tree (no 'prompt' message object)")
        yield f"{path}:{lineno}", obj["prompt"]


def _ranked_replies(msg: dict) -> list[tuple[int, str]]:
    ranked = []
    for r in msg.get("replies") or []:
        if r.get("role") != "assistant" or _flag(r.get("deleted")) or not (r.get("text") or "").strip():
            continue
        k = _rank(r.get("rank"))
        if k is not None:
            ranked.append((k, r["text"]))
    return sorted(ranked)


def oasst_first_turn_best(path: str) -> list[tuple[str, str]]:
    """IFT from Open Assistant: each tree's first prompt and its rank-0 reply (paper 3.1)."""
    out = []
    for _, root in _oasst_trees(path):
        if root.get("lang", "en") != "en" or _flag(root.get("deleted")):
            continue
        ranked = _ranked_replies(root)
        if ranked and ranked[0][0] == 0:
            out.append((root["text"], ranked[0][1]))
    return out


def oasst_ranked_groups(path: str, first_turn_only: bool = True) -> list[tuple[str, list[str]]]:
    """(prompt, replies best-first) for every prompt with >= 2 ranked replies: EFT candidates
    (to be judged by a strong model) and human preference pairs for judge agreement."""
    out = []
    for _, root in _oasst_trees(path):
        stack = [root]
        while stack:
            msg = stack.pop()
            if msg.get("role") == "prompter":
                ranked = _ranked_replies(msg)
                if len(ranked) >= 2:
                    out.append((msg["text"], [t for _, t in ranked]))
            if not first_turn_only:
                stack += msg.get("replies") or []
    return out


# --- human preference pairs -----------------------------------------------------------------

def load_human_pairs(source: str, limit: int = 0) -> tuple[list[HumanPair], dict]:
    """Pairs plus {'skipped': n, ...}: records without a usable majority label are skipped and counted."""
    pairs: list[HumanPair] = []
    stats: Counter = Counter()
    if source.startswith("oasst:"):
        for gi, (prompt, replies) in enumerate(oasst_ranked_groups(source[6:])):
            # Adjacent ranks only, so one prompt does not dominate: best vs second, second vs third...
            for j in range(len(replies) - 1):
                # Alternate which side holds the better reply so position bias cannot look like accuracy.
                better_first = (gi + j) % 2 == 0
                a, b = (replies[j], replies[j + 1]) if better_first else (replies[j + 1], replies[j])
                pairs.append(HumanPair(f"oasst-{gi}-{j}", prompt, a, b, "a" if better_first else "b"))
    elif source.startswith("pandalm:"):
        path = source[8:]
        if not os.path.exists(path):
            raise InputError(f"{path}: file not found")
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
        for i, r in enumerate(data):
            where = f"{path} record {i}"
            votes = [r.get(f"annotator{k}") for k in (1, 2, 3)]
            if any(v not in (0, 1, 2) for v in votes):
                raise InputError(f"{where}: annotator labels must be 0, 1 or 2")
            top, count = Counter(votes).most_common(1)[0]
            if count < 2:
                stats["skipped_no_majority"] += 1
                continue
            # The public test set has a few empty fields and JSON booleans where text belongs.
            instruction, inp, r1, r2 = (str(r.get(k) if r.get(k) is not None else "").strip()
                                        for k in ("instruction", "input", "response1", "response2"))
            if not (instruction or inp) or not r1 or not r2:
                stats["skipped_empty"] += 1
                continue
            prompt = "\n\n".join(x for x in (instruction, inp) if x)
            pairs.append(HumanPair(f"pandalm-{r.get('idx', i)}", prompt, r1, r2, {0: "tie", 1: "a", 2: "b"}[top]))
    else:
        for where, obj in _rows(source):
            if not isinstance(obj, dict):
                raise InputError(f"{where}: expected a JSON object")
            label = obj.get("label")
            if label not in ("a", "b", "tie"):
                raise InputError(f"{where}: 'label' must be 'a', 'b' or 'tie' (got {label!r})")
            pairs.append(HumanPair(str(obj.get("id", where)), _text(obj, "prompt", where),
                                   _text(obj, "response_a", where), _text(obj, "response_b", where), label,
                                   str(obj.get("category") or "")))
    if limit:
        pairs = pairs[:limit]
    stats["pairs"] = len(pairs)
    return pairs, dict(stats)


# --- prompt sets ----------------------------------------------------------------------------

def load_prompts(source: str, limit: int = 0) -> list[dict]:
    """[{id, prompt, category}] from 'embedded:eval_prompts', JSONL ({prompt} objects or plain
    strings), 'mt_bench:PATH' (first turns) or 'alpaca_eval:PATH' (JSON list or JSONL)."""
    out = []
    if source.startswith("alpaca_eval:"):
        path = source[len("alpaca_eval:"):]
        if path.endswith(".json"):
            if not os.path.exists(path):
                raise InputError(f"{path}: file not found")
            with open(path, encoding="utf-8") as f:
                rows = [(f"{path} record {i}", r) for i, r in enumerate(json.load(f))]
        else:
            rows = list(_rows(path))
        for i, (where, r) in enumerate(rows):
            out.append({"id": str(r.get("id", f"alpaca-{i}")), "prompt": _text(r, "instruction", where),
                        "category": r.get("dataset", "alpaca_eval")})
    elif source.startswith("mt_bench:"):
        for where, r in _rows(source[len("mt_bench:"):]):
            turns = r.get("turns") if isinstance(r, dict) else None
            if not turns or not isinstance(turns[0], str):
                raise InputError(f"{where}: MT-Bench question needs a non-empty 'turns' list")
            out.append({"id": f"mtbench-{r.get('question_id')}", "prompt": turns[0],
                        "category": r.get("category", "mt_bench")})
    else:
        for i, (where, r) in enumerate(_rows(source)):
            if isinstance(r, str):
                if not r.strip():
                    raise InputError(f"{where}: empty prompt")
                out.append({"id": f"p-{i}", "prompt": r, "category": ""})
            elif isinstance(r, dict):
                out.append({"id": str(r.get("id", f"p-{i}")), "prompt": _text(r, "prompt", where),
                            "category": r.get("category", "")})
            else:
                raise InputError(f"{where}: expected a prompt string or an object with 'prompt'")
    if not out:
        raise InputError(f"{source}: no prompts")
    return out[:limit] if limit else out


# --- ranked groups: a prompt and its replies as humans ranked them ----------------------------

EMBEDDED_OASST = "embedded:oasst"


@dataclass
class RankedGroup:
    id: str
    prompt: str
    replies: list[str]  # best first, as the humans ranked them
    source: str


def resolve_source(source: str) -> str:
    """'embedded:oasst' -> 'oasst:<path of the shipped sample>'; anything else unchanged."""
    if source == EMBEDDED_OASST:
        path = importlib.resources.files("srlm.seed").joinpath("oasst", "en_100_tree.jsonl")
        return f"oasst:{path}"
    return source


def load_groups(sources: list[str], first_turn_only: bool = True) -> tuple[list[RankedGroup], dict]:
    """Ranked groups from every source, plus {'eft_build/input_ties_skipped': n, ...}: what EFT
    building judges (loop/eft_build.py) and what human pairs are made of (methods/dpo_human.py)."""
    groups: list[RankedGroup] = []
    stats: Counter = Counter()
    for si, original in enumerate(sources):
        source = resolve_source(original)
        if source.startswith("oasst:"):
            for gi, (prompt, replies) in enumerate(oasst_ranked_groups(source[6:], first_turn_only)):
                groups.append(RankedGroup(f"s{si}-oasst-{gi}", prompt, replies, original))
        else:
            pairs, pstats = load_human_pairs(source)
            for key in pstats:
                if key.startswith("skipped"):
                    stats[f"eft_build/input_{key}"] += pstats[key]
            for p in pairs:
                if p.label == "tie":  # no ranking to agree with
                    stats["eft_build/input_ties_skipped"] += 1
                    continue
                replies = [p.response_a, p.response_b] if p.label == "a" else [p.response_b, p.response_a]
                groups.append(RankedGroup(f"s{si}-{p.id}", p.prompt, replies, original))
    if not groups:
        raise InputError(f"no ranked groups (>= 2 ranked replies) in {sources}")
    return groups, dict(stats)
