"""`srlm eval`: is the loop working, or only hacking its own judge? (paper section 4)

Per model of a run (M0, M1 after SFT, M2, ...):
- Judge agreement with humans: the model judges both responses of each human-labelled pair
  with the rubric (K samples, averaged); accuracy is how often the higher mean score is the
  human-preferred response (paper Table 4: 65.1% IFT-only, 78.7% with EFT, 81.7% at M3).
- Answers to held-out eval prompts, their length in characters and tokens, and exports for the
  official evaluators (AlpacaEval model_outputs.json, MT-Bench answer JSONL).
Per pair of models: head-to-head win rate with a pairwise judge prompt asked in both orders to
cancel position bias, a bootstrap confidence interval, and a length-controlled win rate.
Results: DIR/eval/*.jsonl and the "eval" group of DIR/metrics.json.
"""

from __future__ import annotations

import importlib.resources
import math
import os
import random
import re
import statistics
import time
from collections import Counter

from srlm import data, rubric
from srlm.backends import SamplingParams, generate_within_context, make_backend
from srlm.judge import judge_texts
from srlm.modeling import ModelRef, resolve
from srlm.parallel import derive_seed, is_main
from srlm.records import InputError, is_done, mark_done, read_json, read_jsonl, update_metrics, write_json, write_jsonl

WINNER_LINE = re.compile(r"^[ \t]*Winner:[ \t]*(A|B|tie)[ \t]*$", re.MULTILINE | re.IGNORECASE)
WINNER_COMPLETE = re.compile(r"(?:^|\n)[ \t]*Winner:[ \t]*(A|B|tie)\b", re.IGNORECASE)


# --- pure computations (tested against hand-computed cases) ----------------------------------

def agreement(pairs: list, scores_a: list[list[int | None]], scores_b: list[list[int | None]]) -> dict:
    """Judge-human agreement from per-pair judge scores of response a and b.

    accuracy = correct / pairs with a non-tie human label; a judge tie or an unparseable side
    counts as not correct (reported separately), so failures never inflate accuracy."""
    correct = judge_ties = unparsed = human_ties = tie_agree = decided = 0
    for p, sa, sb in zip(pairs, scores_a, scores_b):
        va = [s for s in sa if s is not None]
        vb = [s for s in sb if s is not None]
        if p.label == "tie":
            human_ties += 1
            if va and vb and statistics.fmean(va) == statistics.fmean(vb):
                tie_agree += 1
            continue
        if not va or not vb:
            unparsed += 1
            continue
        ma, mb = statistics.fmean(va), statistics.fmean(vb)
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


def parse_verdict(text: str) -> tuple[str | None, str | None]:
    found = {m.lower() for m in WINNER_LINE.findall(text)}
    if not found:
        return None, "no 'Winner: A|B|tie' line"
    if len(found) > 1:
        return None, f"conflicting verdicts {sorted(found)}"
    v = found.pop()
    return ("tie" if v == "tie" else v.upper()), None


def head_to_head(verdicts_ab: list[str | None], verdicts_ba: list[str | None], len_x: list[int], len_y: list[int],
                 seed: int = 0, bootstrap: int = 1000) -> dict:
    """Model X vs model Y. verdicts_ab: X shown as A; verdicts_ba: Y shown as A (X as B).
    Per prompt the two orders are summed: +1 per X win, -1 per Y win. A prompt with one
    unparseable order is decided by the other; with both unparseable it is excluded."""
    outcomes, dlen = [], []
    first_pos = decided_verdicts = unparsed = 0
    for ab, ba, lx, ly in zip(verdicts_ab, verdicts_ba, len_x, len_y):
        score, seen = 0, 0
        for v, x_is_a in ((ab, True), (ba, False)):
            if v is None:
                unparsed += 1
                continue
            seen += 1
            if v == "tie":
                continue
            decided_verdicts += 1
            first_pos += v == "A"
            score += 1 if (v == "A") == x_is_a else -1
        if seen == 0:
            continue
        outcomes.append(1.0 if score > 0 else 0.0 if score < 0 else 0.5)
        dlen.append((lx - ly) / max(1.0, (lx + ly) / 2))
    n = len(outcomes)
    res = {
        "prompts": len(verdicts_ab), "compared": n,
        "wins": sum(o == 1.0 for o in outcomes), "ties": sum(o == 0.5 for o in outcomes),
        "losses": sum(o == 0.0 for o in outcomes), "unparsed_verdicts": unparsed,
        "win_rate": statistics.fmean(outcomes) if n else None,
        "position_bias_first": first_pos / decided_verdicts if decided_verdicts else None,
    }
    if n:
        rng = random.Random(seed)
        boots = sorted(statistics.fmean(rng.choices(outcomes, k=n)) for _ in range(bootstrap))
        res["win_rate_ci95"] = [boots[int(0.025 * bootstrap)], boots[int(0.975 * bootstrap) - 1]]
        res["length_controlled_win_rate"] = length_controlled(outcomes, dlen)
        res["mean_relative_length_diff"] = statistics.fmean(dlen)
    return res


def length_controlled(outcomes: list[float], dlen: list[float], iters: int = 50) -> float | None:
    """Win rate at zero length difference: logistic regression of outcome (0, 0.5, 1) on the
    relative length difference, read at dlen = 0 (the idea of AlpacaEval's LC win rate)."""
    if len(outcomes) < 3 or len(set(dlen)) < 2:
        return None
    a = b = 0.0
    for _ in range(iters):  # Newton steps on the 2-parameter cross-entropy
        ga = gb = haa = hab = hbb = 0.0
        for y, x in zip(outcomes, dlen):
            p = 1 / (1 + math.exp(-(a + b * x)))
            w = p * (1 - p)
            ga += p - y
            gb += (p - y) * x
            haa += w
            hab += w * x
            hbb += w * x * x
        haa += 1e-6
        hbb += 1e-3  # mild ridge: keeps b finite when outcomes separate perfectly by length
        det = haa * hbb - hab * hab
        if det <= 0:
            break
        da = (hbb * ga - hab * gb) / det
        db = (haa * gb - hab * ga) / det
        a, b = a - da, b - db
        if abs(da) + abs(db) < 1e-9:
            break
    return 1 / (1 + math.exp(-a))


def length_stats(texts: list[str], tokens: list[int]) -> dict:
    chars = [len(t) for t in texts]
    return {"mean_chars": statistics.fmean(chars) if chars else None,
            "median_chars": statistics.median(chars) if chars else None,
            "mean_tokens": statistics.fmean(tokens) if tokens else None,
            "median_tokens": statistics.median(tokens) if tokens else None}


# --- running models -----------------------------------------------------------------------------

def model_ref(cfg, run_dir: str, name: str) -> ModelRef:
    if name == "M0":
        return resolve(cfg.model.name_or_path, cfg.model.gguf_file)
    path = os.path.join(run_dir, "models", name)
    if not os.path.isdir(path):
        raise InputError(f"{path}: model not found (has that iteration run?)")
    return ModelRef(path)


def available_models(run_dir: str) -> list[str]:
    d = os.path.join(run_dir, "models")
    found = sorted((n for n in os.listdir(d) if re.fullmatch(r"M\d+", n) and os.path.exists(os.path.join(d, n + ".done"))),
                   key=lambda n: int(n[1:])) if os.path.isdir(d) else []
    return ["M0"] + found


def load_pairwise_template() -> str:
    return importlib.resources.files("srlm.seed").joinpath("pairwise_template.txt").read_text()


def _human_sources(cfg) -> list[str]:
    out = []
    for s in cfg.eval.human_prefs:
        out.append(str(importlib.resources.files("srlm.seed").joinpath("human_prefs.jsonl"))
                   if s == "embedded:human_prefs" else s)
    return out


def _source_name(source: str) -> str:
    base = os.path.basename(source.split(":", 1)[-1])
    return re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(base)[0])


def eval_model(cfg, run_dir: str, name: str, backend) -> dict:
    """Judge agreement on every human-preference source, and answers to the eval prompts."""
    ev = os.path.join(run_dir, "eval")
    template = rubric.load_template(cfg.judge.template)
    results: dict = {"agreement": {}, "length": None}
    for source in _human_sources(cfg):
        out = os.path.join(ev, f"agreement_{_source_name(source)}_{name}.jsonl")
        if not is_done(out):
            pairs, stats = data.load_human_pairs(source, cfg.eval.max_human_pairs)
            print(f"eval {name}: judging {len(pairs)} human-labelled pairs from {source} (k={cfg.eval.k})", flush=True)
            items = [(p.prompt, p.response_a) for p in pairs] + [(p.prompt, p.response_b) for p in pairs]
            judged = judge_texts(backend, template, items, cfg.eval.k, cfg.judge,
                                 derive_seed(cfg.seed, "eval", name, source))
            rows = []
            for i, p in enumerate(pairs):
                ja, jb = judged[i], judged[len(pairs) + i]
                rows.append({"id": p.id, "label": p.label, "scores_a": [s for _, s, _ in ja],
                             "scores_b": [s for _, s, _ in jb], "judgment_a": ja[0][0], "judgment_b": jb[0][0]})
            write_jsonl(out, rows)
            mark_done(out, stats)
        rows = read_jsonl(out)
        pairs = [data.HumanPair(r["id"], "", "", "", r["label"]) for r in rows]
        summary = agreement(pairs, [r["scores_a"] for r in rows], [r["scores_b"] for r in rows])
        all_scores = [s for r in rows for s in r["scores_a"] + r["scores_b"]]
        parsed = [s for s in all_scores if s is not None]
        hist = Counter(parsed)
        summary["parse_failure_rate"] = 1 - len(parsed) / len(all_scores) if all_scores else None
        summary["score_hist"] = {str(k): hist.get(k, 0) for k in range(rubric.MAX_SCORE + 1)}
        summary["skipped_records"] = read_json(out + ".done", {}).get("skipped_no_majority", 0)
        results["agreement"][_source_name(source)] = summary

    out = os.path.join(ev, f"answers_{name}.jsonl")
    if not is_done(out):
        prompts = data.load_prompts(cfg.eval.prompts, cfg.eval.max_prompts)
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
        from srlm.backends.openai import OpenAIBackend

        model, _, base = spec[len("openai:"):].partition("@")
        if not model or not base:
            raise InputError(f"eval.judge={spec!r}: expected openai:MODEL@BASE_URL")
        return OpenAIBackend(base, model, api_key_env=cfg.backend.api_key_env, concurrency=cfg.backend.concurrency,
                             timeout=cfg.backend.timeout)
    return make_backend(cfg, resolve(spec))


def compare(cfg, run_dir: str, x: str, y: str, judge_backend) -> dict:
    out = os.path.join(run_dir, "eval", f"h2h_{x}_vs_{y}.jsonl")
    ax = {r["id"]: r for r in read_jsonl(os.path.join(run_dir, "eval", f"answers_{x}.jsonl"))}
    ay = {r["id"]: r for r in read_jsonl(os.path.join(run_dir, "eval", f"answers_{y}.jsonl"))}
    ids = [i for i in ax if i in ay]
    if not is_done(out):
        template = load_pairwise_template()

        def render(p, a, b):
            return [{"role": "user", "content": template.replace("{prompt}", p).replace("{response_a}", a)
                     .replace("{response_b}", b)}]

        print(f"eval: {x} vs {y} on {len(ids)} prompts, both orders (judge: {cfg.eval.judge})", flush=True)
        chats = [render(ax[i]["prompt"], ax[i]["answer"], ay[i]["answer"]) for i in ids]
        chats += [render(ax[i]["prompt"], ay[i]["answer"], ax[i]["answer"]) for i in ids]
        params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=cfg.judge.max_new_tokens)
        outs = generate_within_context(judge_backend, chats, params, derive_seed(cfg.seed, "h2h", x, y))
        texts = [_cut_verdict(o[0].text) if o else "" for o in outs]
        rows = []
        for k, i in enumerate(ids):
            vab, eab = parse_verdict(texts[k])
            vba, eba = parse_verdict(texts[len(ids) + k])
            rows.append({"id": i, "verdict_xy": vab, "verdict_yx": vba, "text_xy": texts[k],
                         "text_yx": texts[len(ids) + k], "error_xy": eab, "error_yx": eba,
                         "len_x": len(ax[i]["answer"]), "len_y": len(ay[i]["answer"])})
        write_jsonl(out, rows)
        mark_done(out, {"judge": cfg.eval.judge})
    rows = read_jsonl(out)
    return head_to_head([r["verdict_xy"] for r in rows], [r["verdict_yx"] for r in rows],
                        [r["len_x"] for r in rows], [r["len_y"] for r in rows], seed=cfg.seed)


def _cut_verdict(text: str) -> str:
    m = WINNER_COMPLETE.search(text)
    return text[: m.end()] if m else text


def evaluate_models(cfg, run_dir: str, models: list[str] | None = None) -> dict:
    if not is_main():
        return {}
    models = models or available_models(run_dir)
    out: dict = read_json(os.path.join(run_dir, "metrics.json"), {}).get("eval", {})
    out.setdefault("judge_agreement", {})
    out.setdefault("length", {})
    out.setdefault("win_rate", {})
    for name in models:
        backend = make_backend(cfg, model_ref(cfg, run_dir, name))
        try:
            res = eval_model(cfg, run_dir, name, backend)
        finally:
            backend.close()
        for source, summary in res["agreement"].items():
            out["judge_agreement"].setdefault(source, {})[name] = summary
        out["length"][name] = res["length"]
    # Head-to-head: each new model against its predecessor and against the SFT model M1.
    have = [m for m in available_models(run_dir)
            if os.path.exists(os.path.join(run_dir, "eval", f"answers_{m}.jsonl.done"))]
    for x in models:
        k = int(x[1:])
        # M1 vs M0 shows what SFT did; later models face their predecessor and the SFT anchor.
        rivals = [f"M{k - 1}"] + (["M1"] if k > 2 else []) if k >= 1 else []
        rivals = [r for r in rivals if r in have]
        if not rivals:
            continue
        judge_backend = make_judge(cfg, run_dir, x)
        try:
            for y in rivals:
                out["win_rate"][f"{x}_vs_{y}"] = compare(cfg, run_dir, x, y, judge_backend)
        finally:
            judge_backend.close()
    update_metrics(run_dir, "eval", out)
    return out
