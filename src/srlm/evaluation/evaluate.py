"""`srlm eval`: is the loop working, or only hacking its own judge? (paper section 4)

Per human-preference source, with no model: the baseline every judge figure must beat, "the
longer response (in characters) wins" (at 135M parameters it beats the self-judge: 67.5% on
the PandaLM test set), and per category when the file mixes several.
Per model of a run (M0, M1 after SFT, M2, ...; with sft.enabled=false M1 is M0 and its results are
M0's, copied):
- Judge agreement with humans: the model judges both responses of each human-labelled pair
  with the rubric (K samples, averaged); accuracy is how often the higher mean score is the
  human-preferred response (paper Table 4: 65.1% IFT-only, 78.7% with EFT, 81.7% at M3).
- The pairwise judge on the same human pairs, asked in both orders: how often its two verdicts
  name the same response (position-swap consistency), how often it picks the first position,
  and its accuracy with both orders combined (eval.pairwise_agreement).
- Answers to held-out eval prompts, their length in characters and tokens, and exports for the
  official evaluators (AlpacaEval model_outputs.json, MT-Bench answer JSONL).
Per pair of models, head-to-head win rates with a bootstrap confidence interval and the win
rate at equal length, by two judges (eval.h2h_judge): "pairwise", the pairwise prompt asked in
both orders to cancel position bias, and "pointwise", both answers scored by the rubric judge
(no position to be biased by).
Per model with eval.ifeval, IFEval (ifeval.py), and from its cached scored rows with no
generation (ifeval_breakdown): accuracy per instruction family, the prompts held out of training
and the trained ones apart (prompts.holdout_families), and each model minus M0 and minus M1 on
the same prompts with a paired bootstrap interval (eval group "ifeval_delta").
Results: DIR/eval/*.jsonl and the "eval" group of DIR/metrics.json.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import statistics
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from srlm.data import loaders, rubric
from srlm.engines.backends import SamplingParams, generate_within_context, make_backend
from srlm.loop.judge import judge_texts
from srlm.engines.modeling import ModelRef, resolve
from srlm.run.parallel import derive_seed, is_main
from srlm.run.rundir import RunDir
from srlm.run.records import (InputError, is_done, iter_jsonl, mark_done, marker, read_json, read_jsonl, update_metrics,
                              write_json, write_jsonl)

WINNER_LINE = re.compile(r"^[ \t]*Winner:[ \t]*(A|B|tie)[ \t]*$", re.MULTILINE | re.IGNORECASE)
WINNER_COMPLETE = re.compile(r"(?:^|\n)[ \t]*Winner:[ \t]*(A|B|tie)\b", re.IGNORECASE)
H2H_JUDGES = ("pairwise", "pointwise")


# --- pure computations (tested against hand-computed cases) ----------------------------------

def _mean(scores: list) -> float | None:
    """Mean of the parsed scores (int, or float under expected scoring); None if none parsed."""
    v = [s for s in scores if s is not None]
    return statistics.fmean(v) if v else None


def agreement(pairs: list, scores_a: list[list[float | None]], scores_b: list[list[float | None]]) -> dict:
    """Judge-human agreement from per-pair judge scores of response a and b.

    accuracy = correct / pairs with a non-tie human label; a judge tie or an unparseable side
    counts as not correct (reported separately), so failures never inflate accuracy."""
    correct = judge_ties = unparsed = human_ties = tie_agree = decided = 0
    for p, sa, sb in zip(pairs, scores_a, scores_b):
        ma, mb = _mean(sa), _mean(sb)
        if p.label == "tie":
            human_ties += 1
            if ma is not None and mb is not None and ma == mb:
                tie_agree += 1
            continue
        if ma is None or mb is None:
            unparsed += 1
            continue
        if ma == mb:
            judge_ties += 1
            continue
        decided += 1
        correct += ("a" if ma > mb else "b") == p.label
    n = len(pairs) - human_ties
    return {
        "pairs": len(pairs), "human_non_tie": n, "correct": correct, "wrong": decided - correct, "judge_ties": judge_ties,
        "unparsed": unparsed, "accuracy": correct / n if n else None,
        "accuracy_decided": correct / decided if decided else None,
        "human_ties": human_ties, "tie_agreement": tie_agree / human_ties if human_ties else None,
    }


def length_baseline(pairs: list) -> dict:
    """The judge every judge must beat: "the longer response (in characters) wins".

    accuracy = correct / pairs with a non-tie human label, like agreement(); equal lengths
    count as not correct and are reported as ties."""
    correct = wrong = ties = human_ties = 0
    for p in pairs:
        if p.label == "tie":
            human_ties += 1
            continue
        la, lb = len(p.response_a), len(p.response_b)
        if la == lb:
            ties += 1
        elif ("a" if la > lb else "b") == p.label:
            correct += 1
        else:
            wrong += 1
    n = correct + wrong + ties
    return {"accuracy": correct / n if n else None, "correct": correct, "wrong": wrong, "ties": ties, "n": n,
            "human_ties": human_ties}


def parse_verdict(text: str) -> tuple[str | None, str | None]:
    found = {m.lower() for m in WINNER_LINE.findall(text)}
    if not found:
        return None, "no 'Winner: A|B|tie' line"
    if len(found) > 1:
        return None, f"conflicting verdicts {sorted(found)}"
    v = found.pop()
    return ("tie" if v == "tie" else v.upper()), None


def combine_orders(verdict_ab: str | None, verdict_ba: str | None) -> float | None:
    """One prompt's outcome for X from the two orders (X shown as A, then Y shown as A): the
    orders are summed, +1 per X win and -1 per Y win -> 1.0, 0.5 (tie) or 0.0. One unparseable
    order leaves the other to decide; with both unparseable the prompt has no outcome (None)."""
    score, seen = 0, 0
    for v, x_is_a in ((verdict_ab, True), (verdict_ba, False)):
        if v is None:
            continue
        seen += 1
        if v != "tie":
            score += 1 if (v == "A") == x_is_a else -1
    if not seen:
        return None
    return 1.0 if score > 0 else 0.0 if score < 0 else 0.5


def _first_position(verdicts: list[str | None]) -> tuple[int, int]:
    """(verdicts naming the first-shown response, decided verdicts)."""
    decided = [v for v in verdicts if v in ("A", "B")]
    return sum(v == "A" for v in decided), len(decided)


def bootstrap_ci(outcomes: list[float], seed: int = 0, resamples: int = 1000) -> list[float]:
    """95% percentile-bootstrap interval of the mean outcome (scipy, seeded: deterministic)."""
    if len(outcomes) < 2:  # scipy needs two observations; one outcome has no spread to resample
        return [float(outcomes[0])] * 2 if outcomes else [None, None]
    ci = stats.bootstrap((np.asarray(outcomes, dtype=float),), np.mean, n_resamples=resamples,
                         confidence_level=0.95, method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    return [float(ci.low), float(ci.high)]


def win_rate_at_equal_length(outcomes: list[float], dlen: list[float]) -> float | None:
    """Win rate read at zero length difference: a logistic fit of the outcome (0, 0.5, 1) on the
    relative length difference (len_x - len_y) / mean length, read at difference 0.

    It removes the part of the win rate that length explains linearly on the logit scale; it
    is not AlpacaEval's length-controlled win rate (a GLM with model and instruction terms
    against a fixed baseline). A mild ridge (1e-3 on the slope, 1e-6 on the intercept, as
    halves of squared weights) keeps the fit finite when length separates the outcomes."""
    if len(outcomes) < 3 or len(set(dlen)) < 2:
        return None
    y, x = np.asarray(outcomes, dtype=float), np.asarray(dlen, dtype=float)

    def loss(w):  # cross-entropy with soft labels, and its gradient
        z = w[0] + w[1] * x
        p = 1 / (1 + np.exp(-z))
        value = np.sum(np.logaddexp(0, z) - y * z) + 0.5e-6 * w[0] ** 2 + 0.5e-3 * w[1] ** 2
        return value, np.array([np.sum(p - y) + 1e-6 * w[0], np.sum((p - y) * x) + 1e-3 * w[1]])

    fit = optimize.minimize(loss, np.zeros(2), jac=True, method="BFGS", options={"gtol": 1e-10})
    return float(1 / (1 + np.exp(-fit.x[0])))


def _win_summary(outcomes: list[float], dlen: list[float], seed: int, bootstrap: int) -> dict:
    n = len(outcomes)
    res = {"compared": n, "wins": sum(o == 1.0 for o in outcomes), "ties": sum(o == 0.5 for o in outcomes),
           "losses": sum(o == 0.0 for o in outcomes), "win_rate": statistics.fmean(outcomes) if n else None}
    if n:
        res["win_rate_ci95"] = bootstrap_ci(outcomes, seed, bootstrap)
        res["win_rate_at_equal_length"] = win_rate_at_equal_length(outcomes, dlen)
        res["mean_relative_length_diff"] = statistics.fmean(dlen)
    return res


def _rel_len(lx: int, ly: int) -> float:
    return (lx - ly) / max(1.0, (lx + ly) / 2)


def head_to_head(verdicts_ab: list[str | None], verdicts_ba: list[str | None], len_x: list[int], len_y: list[int],
                 seed: int = 0, bootstrap: int = 1000) -> dict:
    """Model X vs model Y by the pairwise judge. verdicts_ab: X shown as A; verdicts_ba: Y shown
    as A (X as B). Per prompt the two orders are combined by combine_orders()."""
    outcomes, dlen = [], []
    for ab, ba, lx, ly in zip(verdicts_ab, verdicts_ba, len_x, len_y):
        o = combine_orders(ab, ba)
        if o is not None:
            outcomes.append(o)
            dlen.append(_rel_len(lx, ly))
    first, decided = _first_position(list(verdicts_ab) + list(verdicts_ba))
    res = {"prompts": len(verdicts_ab),
           "unparsed_verdicts": sum(v is None for v in list(verdicts_ab) + list(verdicts_ba)),
           "position_bias_first": first / decided if decided else None}
    return {**_win_summary(outcomes, dlen, seed, bootstrap), **res}


def pointwise_head_to_head(scores_x: list[list[float | None]], scores_y: list[list[float | None]],
                           len_x: list[int], len_y: list[int], seed: int = 0, bootstrap: int = 1000) -> dict:
    """Model X vs model Y by the rubric judge: per prompt X wins if the mean score of its answer
    is higher, ties if equal; a prompt with either side unparsed is excluded. Each answer is
    judged alone, so there is no position to be biased by."""
    outcomes, dlen, mx, my = [], [], [], []
    for sx, sy, lx, ly in zip(scores_x, scores_y, len_x, len_y):
        a, b = _mean(sx), _mean(sy)
        if a is None or b is None:
            continue
        outcomes.append(1.0 if a > b else 0.0 if a < b else 0.5)
        dlen.append(_rel_len(lx, ly))
        mx.append(a)
        my.append(b)
    res = {"prompts": len(scores_x), "unparsed_prompts": len(scores_x) - len(outcomes),
           "mean_score_x": statistics.fmean(mx) if mx else None, "mean_score_y": statistics.fmean(my) if my else None}
    return {**_win_summary(outcomes, dlen, seed, bootstrap), **res}


def swap_consistency(pairs: list, verdicts_ab: list[str | None], verdicts_ba: list[str | None]) -> dict:
    """The pairwise judge on human pairs, asked in both orders. verdicts_ab: response_a shown as
    A; verdicts_ba: response_b shown as A.

    consistency = pairs whose two verdicts name the same response (a tie is consistent only
    with a tie) / pairs with both orders parsed; pairs with an unparsed order are counted
    apart. first_position_rate = decided verdicts (A or B) that pick the first-shown response.
    accuracy: both orders combined as in head_to_head, over non-tie human labels; a combined
    tie or no parsed order counts as not correct, as in agreement()."""
    consistent = both = unparsed_pairs = correct = decided = judge_ties = no_verdict = human_ties = 0
    for p, ab, ba in zip(pairs, verdicts_ab, verdicts_ba):
        if ab is None or ba is None:
            unparsed_pairs += 1
        else:
            both += 1
            # what each order names: in the second order A is response_b
            consistent += {"A": "a", "B": "b"}.get(ab, "tie") == {"A": "b", "B": "a"}.get(ba, "tie")
        if p.label == "tie":
            human_ties += 1
            continue
        o = combine_orders(ab, ba)
        if o is None:
            no_verdict += 1
        elif o == 0.5:
            judge_ties += 1
        else:
            decided += 1
            correct += ("a" if o == 1.0 else "b") == p.label
    first, dec_verdicts = _first_position(list(verdicts_ab) + list(verdicts_ba))
    n = len(pairs) - human_ties
    return {
        "pairs": len(pairs), "both_parsed": both, "consistent": consistent,
        "consistency": consistent / both if both else None, "unparsed_pairs": unparsed_pairs,
        "unparsed_verdicts": sum(v is None for v in list(verdicts_ab) + list(verdicts_ba)),
        "first_position_rate": first / dec_verdicts if dec_verdicts else None,
        "human_non_tie": n, "correct": correct, "wrong": decided - correct, "judge_ties": judge_ties,
        "unparsed": no_verdict, "accuracy": correct / n if n else None,
        "accuracy_decided": correct / decided if decided else None, "human_ties": human_ties,
    }


def by_category(categories: list[str] | None) -> dict[str, list[int]]:
    """{category: indices}, only when there is more than one category (else {})."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(categories or []):
        groups.setdefault(c or "(none)", []).append(i)
    return groups if len(groups) > 1 else {}


def length_stats(texts: list[str], tokens: list[int]) -> dict:
    chars = [len(t) for t in texts]
    return {"mean_chars": statistics.fmean(chars) if chars else None,
            "median_chars": statistics.median(chars) if chars else None,
            "mean_tokens": statistics.fmean(tokens) if tokens else None,
            "median_tokens": statistics.median(tokens) if tokens else None}


# --- human-preference sources -------------------------------------------------------------------

@dataclass
class HumanSource:
    name: str  # the file's stem: the key under eval.judge_agreement / baselines / pairwise_agreement
    source: str
    pairs: list
    stats: dict
    categories: list[str] | None  # aligned with pairs; None when the file carries none


def _human_sources(cfg) -> list[str]:
    out = []
    for s in cfg.eval.human_prefs:
        out.append(str(importlib.resources.files("srlm.seed").joinpath("human_prefs.jsonl"))
                   if s == "embedded:human_prefs" else s)
    return out


def _source_name(source: str) -> str:
    base = os.path.basename(source.split(":", 1)[-1])
    return re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(base)[0])


def _pair_categories(source: str, pairs: list) -> list[str] | None:
    """Each pair's "category". HumanPair does not carry one (yet), so for a plain JSONL file it
    is read from the raw rows, which load_human_pairs keeps one pair per row and in order."""
    if pairs and hasattr(pairs[0], "category"):
        cats = [p.category or "" for p in pairs]
    elif source.startswith(("oasst:", "pandalm:", "hf:")) or source in loaders.EMBEDDED_FILES:
        return None
    else:
        cats = [str(obj.get("category") or "") if isinstance(obj, dict) else ""
                for _, obj in iter_jsonl(source)][: len(pairs)]
    return cats if any(cats) and len(cats) == len(pairs) else None


def human_seed(cfg, kind: str, model: str, src: HumanSource) -> int:
    """The seed of a model's judgments of one human-preference source: named by the source's file
    name, not its path, so a run judges the same way wherever the checkout or the data lies (the
    embedded file's path is the checkout's: before 2026-12-04 every clone drew other judgments)."""
    return derive_seed(cfg.seed, kind, model, src.name)


def load_human_source(source: str, limit: int = 0) -> HumanSource:
    pairs, st = loaders.load_human_pairs(source, limit)
    return HumanSource(_source_name(source), source, pairs, st, _pair_categories(source, pairs))


def baselines(src: HumanSource) -> dict:
    """eval.baselines[source]: {"length": length_baseline, "by_category": {cat: {"length": ...}}}."""
    res: dict = {"length": length_baseline(src.pairs)}
    groups = by_category(src.categories)
    if groups:
        res["by_category"] = {c: {"length": length_baseline([src.pairs[i] for i in ix])} for c, ix in groups.items()}
    return res


# --- running models -----------------------------------------------------------------------------

def model_ref(cfg, run_dir: str, name: str) -> ModelRef:
    if name == "M0":
        return resolve(cfg.model.name_or_path, cfg.model.gguf_file)
    if not re.fullmatch(r"M\d+", name):
        raise InputError(f"{name!r}: not a model name (M0, M1, ...)")
    path = RunDir(run_dir).model(int(name[1:]))
    if not os.path.isdir(path):
        raise InputError(f"{path}: model not found (has that iteration run?)")
    return ModelRef(path)


def available_models(run_dir: str) -> list[str]:
    d = RunDir(run_dir).models_dir
    found = sorted((n for n in os.listdir(d) if re.fullmatch(r"M\d+", n) and is_done(os.path.join(d, n))),
                   key=lambda n: int(n[1:])) if os.path.isdir(d) else []
    return ["M0"] + found


def load_pairwise_template() -> str:
    return importlib.resources.files("srlm.seed").joinpath("pairwise_template.txt").read_text()


def judge_settings(cfg) -> str:
    """Digest of the judge settings a cached judgment depends on."""
    from srlm.run.rundir import config_digest

    j = cfg.judge
    return config_digest({"scoring": getattr(j, "scoring", "parsed"), "temperature": j.temperature, "top_p": j.top_p,
                          "max_new_tokens": j.max_new_tokens, "stop_repetition": getattr(j, "stop_repetition", 0),
                          "template": j.template, "k": cfg.eval.k, "seed": cfg.seed})


def _cached(path: str, info: dict) -> bool:
    """Done, and made with the same judge settings (a changed judge recomputes)."""
    if not is_done(path):
        return False
    done = read_json(marker(path), {})
    return all(done.get(k, v) == v for k, v in info.items())


def eval_model(cfg, run_dir: str, name: str, backend, sources: list[HumanSource] | None = None) -> dict:
    """Judge agreement on every human-preference source, and answers to the eval prompts."""
    ev = os.path.join(run_dir, "eval")
    template = rubric.load_template(cfg.judge.template)
    results: dict = {"agreement": {}, "length": None}
    if sources is None:
        sources = [load_human_source(s, cfg.eval.max_human_pairs) for s in _human_sources(cfg)]
    for src in sources:
        out = os.path.join(ev, f"agreement_{src.name}_{name}.jsonl")
        scoring = getattr(cfg.judge, "scoring", "parsed")
        # A cache made with other pairs (eval.max_human_pairs) or judge settings is recomputed;
        # markers written before these keys existed compare on scoring only.
        info = {"scoring": scoring, "pairs": src.stats.get("pairs", len(src.pairs)), "settings": judge_settings(cfg)}
        if not _cached(out, info) and not _reuse_m0(run_dir, name, out, info):
            pairs = src.pairs
            print(f"eval {name}: judging {len(pairs)} human-labelled pairs from {src.source} (k={cfg.eval.k})", flush=True)
            items = [(p.prompt, p.response_a) for p in pairs] + [(p.prompt, p.response_b) for p in pairs]
            judged = judge_texts(backend, template, items, cfg.eval.k, cfg.judge,
                                 human_seed(cfg, "eval", name, src))
            rows = []
            for i, p in enumerate(pairs):
                ja, jb = judged[i], judged[len(pairs) + i]
                rows.append({"id": p.id, "label": p.label, "category": src.categories[i] if src.categories else None,
                             "scores_a": [s for _, s, _ in ja], "scores_b": [s for _, s, _ in jb],
                             "judgment_a": ja[0][0], "judgment_b": jb[0][0]})
            write_jsonl(out, rows)
            mark_done(out, {**src.stats, **info})
        rows = read_jsonl(out)
        pairs = [loaders.HumanPair(r["id"], "", "", "", r["label"]) for r in rows]
        sa, sb = [r["scores_a"] for r in rows], [r["scores_b"] for r in rows]
        summary = agreement(pairs, sa, sb)
        all_scores = [s for r in rows for s in r["scores_a"] + r["scores_b"]]
        parsed = [s for s in all_scores if s is not None]
        # Under expected scoring a score is a float: the histogram bins it to the nearest point.
        hist = Counter(int(round(s)) for s in parsed)
        summary["parse_failure_rate"] = 1 - len(parsed) / len(all_scores) if all_scores else None
        summary["score_hist"] = {str(k): hist.get(k, 0) for k in range(rubric.MAX_SCORE + 1)}
        summary["skipped_records"] = read_json(marker(out), {}).get("skipped_no_majority", 0)
        cats = [r.get("category") for r in rows]
        if not any(cats) and src.categories and len(src.categories) == len(rows):
            cats = src.categories  # rows cached before categories were stored
        groups = by_category(cats)
        if groups:
            summary["by_category"] = {c: agreement([pairs[i] for i in ix], [sa[i] for i in ix], [sb[i] for i in ix])
                                      for c, ix in groups.items()}
        results["agreement"][src.name] = summary

    out = os.path.join(ev, f"answers_{name}.jsonl")
    if not is_done(out) and _reuse_m0(run_dir, name, out, {}):
        export_answers(run_dir, name, read_jsonl(out))
    if not is_done(out):
        prompts = loaders.load_prompts(cfg.eval.prompts, cfg.eval.max_prompts)
        print(f"eval {name}: answering {len(prompts)} eval prompts", flush=True)
        params = SamplingParams(n=1, temperature=cfg.sample.temperature, top_p=cfg.sample.top_p,
                                max_new_tokens=cfg.eval.max_new_tokens)
        outs = backend.generate([[{"role": "user", "content": p["prompt"]}] for p in prompts], params,
                                derive_seed(cfg.seed, "eval-answers"))
        rows = [{"id": p["id"], "category": p["category"], "prompt": p["prompt"], "answer": o[0].text.strip(),
                 "num_tokens": o[0].num_tokens, "finish_reason": o[0].finish_reason} for p, o in zip(prompts, outs)]
        write_jsonl(out, rows)
        mark_done(out, {"answers": len(rows)})
        export_answers(run_dir, name, rows)
    rows = read_jsonl(out)
    results["length"] = length_stats([r["answer"] for r in rows], [r["num_tokens"] for r in rows])
    return results


def export_answers(run_dir: str, name: str, rows: list[dict]) -> None:
    """AlpacaEval model_outputs.json and MT-Bench answer JSONL, for the official evaluators."""
    generator = f"srlm-{os.path.basename(os.path.abspath(run_dir))}-{name}"
    write_json(os.path.join(run_dir, "eval", "alpaca_eval", name, "model_outputs.json"),
               [{"instruction": r["prompt"], "output": r["answer"], "generator": generator, "dataset": r["category"]}
                for r in rows])
    mt = []
    for r in rows:
        qid = r["id"].split("-", 1)[1] if r["id"].startswith("mtbench-") else r["id"]
        mt.append({"question_id": int(qid) if str(qid).isdigit() else qid, "answer_id": f"{generator}-{r['id']}",
                   "model_id": generator, "choices": [{"index": 0, "turns": [r["answer"]]}], "tstamp": time.time()})
    write_jsonl(os.path.join(run_dir, "eval", "mt_bench", f"{name}.jsonl"), mt)


def make_judge(cfg, run_dir: str, newer: str):
    """The head-to-head judge: the newer model itself, a local model, or openai:MODEL@BASE_URL."""
    spec = cfg.eval.judge
    if spec == "self":
        return make_backend(cfg, model_ref(cfg, run_dir, newer))
    if spec.startswith("openai:"):
        from srlm.engines.backends.openai import OpenAIBackend

        model, _, base = spec[len("openai:"):].partition("@")
        if not model or not base:
            raise InputError(f"eval.judge={spec!r}: expected openai:MODEL@BASE_URL")
        return OpenAIBackend(base, model, api_key_env=cfg.backend.api_key_env, concurrency=cfg.backend.concurrency,
                             timeout=cfg.backend.timeout)
    return make_backend(cfg, resolve(spec))


def judge_label(cfg, newer: str) -> str:
    """Whose verdicts: with eval.judge=self the model itself, otherwise the configured judge."""
    return newer if cfg.eval.judge == "self" else "judge"


def pairwise_verdicts(cfg, judge_backend, items: list[tuple[str, str, str]], seed: int) -> tuple[list, list]:
    """Ask the pairwise prompt on (prompt, x, y) items in both orders (x as A, then y as A) at
    temperature 0 -> two lists of (verdict, error, text)."""
    template = load_pairwise_template()

    def render(p, a, b):
        return [{"role": "user", "content": template.replace("{prompt}", p).replace("{response_a}", a)
                 .replace("{response_b}", b)}]

    chats = [render(p, x, y) for p, x, y in items] + [render(p, y, x) for p, x, y in items]
    params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=cfg.judge.max_new_tokens)
    outs = generate_within_context(judge_backend, chats, params, seed)
    texts = [_cut_verdict(o[0].text) if o else "" for o in outs]
    res = [(*parse_verdict(t), t) for t in texts]
    return res[: len(items)], res[len(items):]


def pairwise_agreement(cfg, run_dir: str, src: HumanSource, label: str, judge_backend) -> dict:
    """Swap consistency and accuracy of the pairwise judge on one human-preference source.
    Output: DIR/eval/pairwise_<source>_<judge>.jsonl."""
    out = os.path.join(run_dir, "eval", f"pairwise_{src.name}_{label}.jsonl")
    info = {"judge": cfg.eval.judge, "pairs": len(src.pairs), "settings": judge_settings(cfg)}
    if not _cached(out, info) and not _reuse_m0(run_dir, label, out, info):
        print(f"eval: pairwise judge {label} on {len(src.pairs)} human pairs from {src.source}, both orders", flush=True)
        ab, ba = pairwise_verdicts(cfg, judge_backend, [(p.prompt, p.response_a, p.response_b) for p in src.pairs],
                                   human_seed(cfg, "pairwise-human", label, src))
        rows = [{"id": p.id, "label": p.label, "category": src.categories[i] if src.categories else None,
                 "verdict_ab": ab[i][0], "verdict_ba": ba[i][0], "error_ab": ab[i][1], "error_ba": ba[i][1],
                 "text_ab": ab[i][2], "text_ba": ba[i][2]} for i, p in enumerate(src.pairs)]
        write_jsonl(out, rows)
        mark_done(out, info)
    rows = read_jsonl(out)
    pairs = [loaders.HumanPair(r["id"], "", "", "", r["label"]) for r in rows]
    vab, vba = [r["verdict_ab"] for r in rows], [r["verdict_ba"] for r in rows]
    res = {**swap_consistency(pairs, vab, vba), "judge": cfg.eval.judge}
    groups = by_category([r.get("category") for r in rows])
    if groups:
        res["by_category"] = {c: swap_consistency([pairs[i] for i in ix], [vab[i] for i in ix], [vba[i] for i in ix])
                              for c, ix in groups.items()}
    return res


def compare(cfg, run_dir: str, x: str, y: str, judge_backend) -> dict:
    """Pairwise head-to-head. Output: DIR/eval/h2h_<x>_vs_<y>.jsonl."""
    ax = {r["id"]: r for r in read_jsonl(os.path.join(run_dir, "eval", f"answers_{x}.jsonl"))}
    ay = {r["id"]: r for r in read_jsonl(os.path.join(run_dir, "eval", f"answers_{y}.jsonl"))}
    return pairwise_h2h(cfg, ax, ay, os.path.join(run_dir, "eval", f"h2h_{x}_vs_{y}.jsonl"), {"judge": cfg.eval.judge},
                        judge_backend, derive_seed(cfg.seed, "h2h", x, y), f"{x} vs {y}")


def pairwise_h2h(cfg, ax: dict, ay: dict, out: str, info: dict, judge_backend, seed: int, what: str) -> dict:
    """head_to_head of answers ax vs ay ({id: answers row}) on their common prompts, each asked
    in both orders; the verdicts are cached in `out` and redone when `info` (the judge) changes.
    Used by compare() and by `srlm compare --h2h-judge` (report/cross.py)."""
    ids = [i for i in ax if i in ay]
    if not _cached(out, info):
        print(f"eval: {what} on {len(ids)} prompts, both orders (judge: {info.get('judge')})", flush=True)
        ab, ba = pairwise_verdicts(cfg, judge_backend, [(ax[i]["prompt"], ax[i]["answer"], ay[i]["answer"])
                                                        for i in ids], seed)
        rows = [{"id": i, "verdict_xy": ab[k][0], "verdict_yx": ba[k][0], "text_xy": ab[k][2], "text_yx": ba[k][2],
                 "error_xy": ab[k][1], "error_yx": ba[k][1], "len_x": len(ax[i]["answer"]), "len_y": len(ay[i]["answer"])}
                for k, i in enumerate(ids)]
        write_jsonl(out, rows)
        mark_done(out, info)
    rows = read_jsonl(out)
    return head_to_head([r["verdict_xy"] for r in rows], [r["verdict_yx"] for r in rows],
                        [r["len_x"] for r in rows], [r["len_y"] for r in rows], seed=cfg.seed)


def pointwise_scores(cfg, run_dir: str, model: str, label: str, judge_backend) -> dict[str, list]:
    """Rubric scores (k = eval.k) of one model's eval answers by one judge, judged once and
    reused by every comparison. Output: DIR/eval/pointwise_<model>_by_<judge>.jsonl."""
    info = {"judge": cfg.eval.judge, "judge_model": label, "scoring": getattr(cfg.judge, "scoring", "parsed"),
            "k": cfg.eval.k}
    return score_answers(cfg, os.path.join(run_dir, "eval", f"answers_{model}.jsonl"),
                         os.path.join(run_dir, "eval", f"pointwise_{model}_by_{label}.jsonl"), info, judge_backend,
                         derive_seed(cfg.seed, "pointwise", model, label), f"rubric judge {label} scoring", model)


def score_answers(cfg, answers_path: str, out: str, info: dict, judge_backend, seed: int, what: str,
                  model: str) -> dict[str, list]:
    """{id: rubric scores (k = eval.k, judge.scoring mode)} of the answers in answers_path,
    cached in `out` and redone when `info` (judge, scoring, k) changes. Used by pointwise_scores()
    and by `srlm compare --h2h-judge` (report/cross.py)."""
    if not _cached(out, info):
        answers = read_jsonl(answers_path)
        print(f"eval: {what} {len(answers)} answers of {model} (k={cfg.eval.k})", flush=True)
        judged = judge_texts(judge_backend, rubric.load_template(cfg.judge.template),
                             [(r["prompt"], r["answer"]) for r in answers], cfg.eval.k, cfg.judge, seed)
        write_jsonl(out, [{"id": r["id"], "scores": [s for _, s, _ in j], "judgment": j[0][0],
                           "errors": [e for _, _, e in j]} for r, j in zip(answers, judged)])
        mark_done(out, info)
    return {r["id"]: r["scores"] for r in read_jsonl(out)}


def compare_pointwise(cfg, run_dir: str, x: str, y: str, label: str, judge_backend) -> dict:
    """Pointwise head-to-head: both models' answers scored by the same judge."""
    ax = {r["id"]: r for r in read_jsonl(os.path.join(run_dir, "eval", f"answers_{x}.jsonl"))}
    ay = {r["id"]: r for r in read_jsonl(os.path.join(run_dir, "eval", f"answers_{y}.jsonl"))}
    sx = pointwise_scores(cfg, run_dir, x, label, judge_backend)
    sy = pointwise_scores(cfg, run_dir, y, label, judge_backend)
    ids = [i for i in ax if i in ay and i in sx and i in sy]
    res = pointwise_head_to_head([sx[i] for i in ids], [sy[i] for i in ids], [len(ax[i]["answer"]) for i in ids],
                                 [len(ay[i]["answer"]) for i in ids], seed=cfg.seed)
    return {**res, "judge": cfg.eval.judge, "judge_model": label}


def ifeval_model(cfg, run_dir: str, name: str, backend) -> dict:
    """IFEval (ifeval.py): greedy answers to its verifiable-instruction prompts, checked by
    lm-eval's checkers; cached in eval/ifeval_<model>.jsonl."""
    from srlm.data import ifeval_checks
    from srlm.evaluation import ifeval

    out = os.path.join(run_dir, "eval", f"ifeval_{name}.jsonl")
    info = {"size": cfg.eval.ifeval_size, "max_new_tokens": cfg.eval.ifeval_max_new_tokens, "seed": cfg.seed}
    # Greedy answers of M1 = M0 are M0's (checked: the same 320 rows byte for byte in runs/verified).
    if not _cached(out, info) and not _reuse_m0(run_dir, name, out, info):
        prompts = ifeval_checks.load_prompts(cfg.eval.ifeval_size, cfg.seed)
        print(f"eval {name}: IFEval, {len(prompts)} prompts (greedy, up to {cfg.eval.ifeval_max_new_tokens} tokens)",
              flush=True)
        rows = ifeval_checks.score(ifeval.answer(backend, prompts, cfg.eval.ifeval_max_new_tokens,
                                          derive_seed(cfg.seed, "ifeval")))
        write_jsonl(out, rows)
        mark_done(out, info)
    return ifeval.summarize(read_jsonl(out), seed=cfg.seed)


def _reuse_m0(run_dir: str, name: str, out: str, info: dict) -> bool:
    """With sft.enabled=false the sft stage saves M0's own weights as M1, so M1's evaluation is
    M0's: copy M0's cached result (same file name with M0 for M1) instead of recomputing it.
    Answers and greedy verdicts would come out the same; sampled judgments would differ only in
    their random draws (their seed names the model), so M1's figures equal M0's by construction.
    True when copied."""
    src = os.path.join(os.path.dirname(out), re.sub(r"_M1(\.jsonl)$", r"_M0\1", os.path.basename(out)))
    if name != "M1" or src == out or not _cached(src, info) or not _sft_skipped(run_dir):
        return False
    shutil.copyfile(src, out)
    mark_done(out, {**read_json(marker(src), {}), "copied_from": "M0 (sft.enabled=false: M1 is M0)"})
    return True


def _sft_skipped(run_dir: str) -> bool:
    """Whether M1 is M0 unchanged (the sft stage ran with sft.enabled=false)."""
    rd = RunDir(run_dir)
    marker = rd.read_marker(rd.model(1)) or {}
    return bool((marker.get("stats") or {}).get("sft/skipped"))


IFEVAL_SUBSETS = ("ifeval_heldout/", "ifeval_trained/")  # metric prefixes of the held-out / trained prompts
IFEVAL_BASELINES = ("M0", "M1")  # every model's IFEval is compared with the base model and the SFT model


def ifeval_split(cfg) -> tuple[frozenset[str], frozenset[str]]:
    """(instruction ids held out of training, ids training may carry); both empty when nothing
    is held out (prompts.holdout_families, read with a default so older configs still work)."""
    spec = list(getattr(getattr(cfg, "prompts", None), "holdout_families", None) or [])
    if not spec:
        return frozenset(), frozenset()
    from srlm.loop import verifier

    held = verifier.heldout_ids(spec, cfg.seed)
    if not held:
        return frozenset(), frozenset()
    pool = list(getattr(cfg.prompts, "verifiable_families", None) or [])
    return held, frozenset(verifier.trainable_ids(pool, spec, cfg.seed))


def _renamed(metrics: dict, prefix: str) -> dict:
    """`ifeval/x` -> `<prefix>x`."""
    return {prefix + k.split("/", 1)[1]: v for k, v in metrics.items()}


def ifeval_breakdown(cfg, run_dir: str, ifeval_group: dict) -> dict:
    """What the cached scored IFEval rows (eval/ifeval_<M>.jsonl) give without generating
    anything; recomputed on every `srlm eval`.

    Adds to each model's entry of `ifeval_group` (eval.ifeval): `ifeval/by_family`
    (instruction-level accuracy per instruction family) and, when families are held out of
    training, summarize()'s metrics on the prompts whose instructions are all held out
    (`ifeval_heldout/*`) and all trainable (`ifeval_trained/*`). Returns the `ifeval_delta`
    group: `M<t>_vs_M0` and `M<t>_vs_M1`, ifeval.paired_delta of M<t> minus the earlier model on
    their common prompts (`ifeval/delta_*`, and `ifeval_heldout/delta_*`, `ifeval_trained/delta_*`
    on the subsets)."""
    from srlm.evaluation import ifeval

    ev = os.path.join(run_dir, "eval")
    found = [m.group(1) for m in map(re.compile(r"ifeval_(M\d+)\.jsonl").fullmatch,
                                     os.listdir(ev) if os.path.isdir(ev) else []) if m]
    rows = {m: read_jsonl(os.path.join(ev, f"ifeval_{m}.jsonl")) for m in sorted(found, key=lambda n: int(n[1:]))
            if is_done(os.path.join(ev, f"ifeval_{m}.jsonl"))}
    if not rows:
        return {}
    held, trained = ifeval_split(cfg)
    subsets = list(zip(IFEVAL_SUBSETS, (held, trained))) if held else []
    for m, r in rows.items():
        entry = {k: v for k, v in (ifeval_group.get(m) or ifeval.summarize(r, seed=cfg.seed)).items()
                 if not k.startswith(IFEVAL_SUBSETS)}  # a changed holdout leaves no stale split
        entry["ifeval/by_family"] = ifeval.by_family(r)
        for prefix, ids in subsets:
            entry |= _renamed(ifeval.summarize(ifeval.subset(r, ids), seed=cfg.seed), prefix)
        ifeval_group[m] = entry
    deltas = {}
    for m in rows:
        for base in IFEVAL_BASELINES:
            if base not in rows or int(base[1:]) >= int(m[1:]):
                continue
            d = ifeval.paired_delta(rows[base], rows[m], seed=cfg.seed)
            for prefix, ids in subsets:
                d |= _renamed(ifeval.paired_delta(ifeval.subset(rows[base], ids), ifeval.subset(rows[m], ids),
                                                  seed=cfg.seed), prefix)
            deltas[f"{m}_vs_{base}"] = d
    return deltas


def _cut_verdict(text: str) -> str:
    m = WINNER_COMPLETE.search(text)
    return text[: m.end()] if m else text


def evaluate_models(cfg, run_dir: str, models: list[str] | None = None) -> dict:
    if not is_main():
        return {}
    models = models or available_models(run_dir)
    # Read with defaults so a config object from before these options still evaluates.
    want_pairwise_human = getattr(cfg.eval, "pairwise_agreement", True)
    h2h_judges = list(getattr(cfg.eval, "h2h_judge", list(H2H_JUDGES)))
    if set(h2h_judges) - set(H2H_JUDGES):
        raise InputError(f"eval.h2h_judge={h2h_judges}: each must be one of {list(H2H_JUDGES)}")
    self_judge = cfg.eval.judge == "self"
    out: dict = read_json(RunDir(run_dir).metrics, {}).get("eval", {})
    for key in ("judge_agreement", "length", "win_rate", "win_rate_pointwise", "baselines", "pairwise_agreement",
                "ifeval"):
        out.setdefault(key, {})
    sources = [load_human_source(s, cfg.eval.max_human_pairs) for s in _human_sources(cfg)]
    for src in sources:  # no model needed
        out["baselines"][src.name] = baselines(src)
    for name in models:
        backend = make_backend(cfg, model_ref(cfg, run_dir, name))
        try:
            res = eval_model(cfg, run_dir, name, backend, sources)
            if getattr(cfg.eval, "ifeval", False):
                out["ifeval"][name] = ifeval_model(cfg, run_dir, name, backend)
            if want_pairwise_human and self_judge:
                for src in sources:
                    out["pairwise_agreement"].setdefault(src.name, {})[name] = pairwise_agreement(
                        cfg, run_dir, src, name, backend)
        finally:
            backend.close()
        for source, summary in res["agreement"].items():
            out["judge_agreement"].setdefault(source, {})[name] = summary
        out["length"][name] = res["length"]
    out["ifeval_delta"] = ifeval_breakdown(cfg, run_dir, out["ifeval"])
    # One external judge serves every comparison (made when first needed); with "self" each
    # newer model judges its own pairs.
    external = None

    def external_judge():
        nonlocal external
        if external is None:
            external = make_judge(cfg, run_dir, models[-1])
        return external

    try:
        if want_pairwise_human and not self_judge:
            for src in sources:
                out["pairwise_agreement"].setdefault(src.name, {})["judge"] = pairwise_agreement(
                    cfg, run_dir, src, "judge", external_judge())
        # Head-to-head: each new model against its predecessor and against the SFT model M1.
        have = [m for m in available_models(run_dir)
                if is_done(os.path.join(run_dir, "eval", f"answers_{m}.jsonl"))]
        for x in models:
            k = int(x[1:])
            # M1 vs M0 shows what SFT did; later models face their predecessor and the SFT anchor.
            rivals = [f"M{k - 1}"] + (["M1"] if k > 2 else []) if k >= 1 else []
            rivals = [r for r in rivals if r in have]
            if not rivals or not h2h_judges:
                continue
            judge_backend = make_judge(cfg, run_dir, x) if self_judge else external_judge()
            label = judge_label(cfg, x)
            try:
                for y in rivals:
                    if "pairwise" in h2h_judges:
                        out["win_rate"][f"{x}_vs_{y}"] = compare(cfg, run_dir, x, y, judge_backend)
                    if "pointwise" in h2h_judges:
                        out["win_rate_pointwise"][f"{x}_vs_{y}"] = compare_pointwise(cfg, run_dir, x, y, label,
                                                                                     judge_backend)
            finally:
                if self_judge:
                    judge_backend.close()
    finally:
        if external is not None:
            external.close()
    update_metrics(run_dir, "eval", out)
    return out
