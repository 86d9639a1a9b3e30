"""Meta-Rewarding (Wu et al. 2024, arXiv:2407.19594): M_t also judges its own judgments, and the
judgments it prefers become DPO pairs that train the judge (section 2.3, "Judge Preference Data
Creation"), beside the actor pairs of the loop.

Pure parts, no model calls (the first half of this module):
- META_JUDGE_TEMPLATE / render_meta: the meta-judge prompt (rubric, request, response and two
  judgments; the verdict is a final line `Winner: Judgement A` or `Winner: Judgement B`);
- parse_meta_verdict, meta_stop_complete, truncate_after_verdict: a strict verdict parser and
  the early-stop helpers, mirroring rubric.parse_score and its score-line helpers;
- forced_verdict_prefix, decide_verdict: meta.scoring=expected (a departure from the paper's
  parsed verdicts, like judge.scoring=expected): the text before its verdict line plus
  `Winner: Judgement `, and the verdict from the next-token probabilities of A and B there;
- battle_orders, position_weights, battle_matrix, bradley_terry, elo_scores: every unordered
  pair of one response's judgments is meta-judged in both orders; verdicts are weighted so the
  meta-judge's first-position bias cancels (the paper's w1, w2), and Bradley-Terry strengths
  ("Elo scores") are fitted to the weighted battle matrix;
- select_response, judge_pair: which response of a prompt gets meta-judged (the one whose
  judgment scores vary most) and which judgment pair is trained on (best vs worst strength).

The two stages of iteration t (the second half), in the iterations meta.judge_iterations
(trains_judge) of method meta_rewarding; their rows are in srlm/stages.py:
- meta_judge (after judge): per prompt, the candidate whose judgment scores vary most
  (select_response); every pair of its judgments that wrote a score line is compared by
  M_t in both orders with the meta-judge prompt (render_meta). meta.scoring picks the
  verdict: parsed (the paper), the `Winner: Judgement A|B` line parsed strictly by
  parse_meta_verdict, nothing guessed; expected (a departure), the more probable of A and B
  after the text cut before its verdict line plus a forced `Winner: Judgement ` prefix
  (forced_verdict_prefix, Backend.choice_probs), so every comparison is decided; the parsed
  verdict, the two probabilities and whether the prefix was forced are kept on the record.
  Output: DIR/iter_<t>/meta_judgments.jsonl of MetaJudgmentRecord.
- judge_pairs (after pairs): the verdicts are weighted by position over the whole iteration
  (position_weights, cancelling the meta-judge's first-position bias), Bradley-Terry
  strengths are fitted per candidate (elo_scores); chosen = the strongest judgment,
  rejected = the weakest, prompt = the judge prompt (the rubric request for that candidate).
  Pairs whose chosen judgment is longer than meta.max_chosen_words are dropped, and judge pairs
  are capped at meta.judge_pair_fraction of the DPO set.
  Output: DIR/iter_<t>/judge_pairs.jsonl of JudgePairRecord.
The dpo stage trains on pairs.jsonl plus judge_pairs.jsonl in those iterations (its row in
srlm/stages.py passes the file).
Meta-Rewarding's length control of the actor pairs (pairs.rho) is the loop's, in loop/pairs.py:
any method may use it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from srlm.data import rubric
from srlm.engines.backends import Backend, SamplingParams, generate_within_context
from srlm.run.parallel import is_main, run_chunks
from srlm.run.records import (
    CandidateRecord,
    JudgePairRecord,
    JudgmentRecord,
    MetaJudgmentRecord,
    read_jsonl,
    write_jsonl,
)

# -- pure parts ---------------------------------------------------------------------------------

# Constant instructions and rubric come first so every meta-judgment shares its prefill.
META_JUDGE_TEMPLATE = """\
You are checking the work of a grader. The grader read a user's request and an AI assistant's \
response, then graded the response with the rubric below. Two independent gradings of the same \
response follow the response. Decide which grading applies the rubric more accurately: it checks \
each rubric statement against what the response actually says, awards a point only when the \
statement really holds, and reaches the total that the rubric implies. Do not favour a grading \
because it is longer, because of its position, or because its score is higher or lower.

<rubric>
{rubric}
</rubric>

Write brief reasoning of at most 100 words. Then, on the final line, write exactly one of:
Winner: Judgement A
Winner: Judgement B

<request>
{prompt}
</request>

<response>
{response}
</response>

<judgement A>
{judgment_a}
</judgement A>

<judgement B>
{judgment_b}
</judgement B>
"""

_PLACEHOLDER = re.compile(r"\{(rubric|prompt|response|judgment_a|judgment_b)\}")

# The verdict line. Both spellings of the word are accepted ("Judgement" as the template asks,
# "Judgment" as US-trained models often write it): the spelling carries no doubt about which
# judgment won. Everything else is strict: case, whole line, one capital letter, nothing after.
VERDICT_LINE = re.compile(r"^[ \t]*Winner:[ \t]*Judge?ment[ \t]+([AB])[ \t]*$", re.MULTILINE)
# Complete once the line has ended: stopping earlier could cut "A and B" down to a valid "A".
VERDICT_LINE_COMPLETE = re.compile(r"(?:^|\n)[ \t]*Winner:[ \t]*Judge?ment[ \t]+[AB][ \t]*\n")

# Where a meta-judgment's verdict starts, for expected mode: the first line that opens with
# "winner" (any case, after bullets or markdown marks such as "- " or "**"), valid or not
# ("Winner: Judgement C", "Winner: the first one"). Text from there on is replaced by the prefix.
VERDICT_START = re.compile(r"^[^\w\n]*winner\b", re.IGNORECASE | re.MULTILINE)
VERDICTS = ("A", "B")
FORCED_VERDICT_PREFIX = "Winner: Judgement "

STRENGTH_TIE = 1e-9  # strengths closer than this are a tie (MM fits to ~1e-12)


def render_meta(template: str, rubric_text: str, prompt: str, response: str, judgment_a: str, judgment_b: str) -> str:
    """Fill the meta-judge template. One pass over the template's own placeholders, so braces
    (or a literal "{response}") inside the inserted texts are never substituted again."""
    values = {"rubric": rubric_text.strip(), "prompt": prompt.strip(), "response": response.strip(),
              "judgment_a": judgment_a.strip(), "judgment_b": judgment_b.strip()}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def parse_meta_verdict(text: str) -> tuple[str | None, str | None]:
    """Return ("A" | "B", None) or (None, reason). Deterministic and strict: only whole lines
    `Winner: Judgement A|B` count; lines naming both letters are a conflict, nothing is guessed."""
    found = set(VERDICT_LINE.findall(text))
    if not found:
        return None, "no 'Winner: Judgement A|B' line"
    if len(found) > 1:
        return None, "conflicting verdict lines ['A', 'B']"
    return found.pop(), None


def meta_stop_complete(text: str) -> bool:
    """True once a verdict line is finished (used to stop generation early)."""
    return VERDICT_LINE_COMPLETE.search(text) is not None


def truncate_after_verdict(text: str) -> str:
    """Cut everything after the first complete verdict line (and its newline)."""
    m = VERDICT_LINE_COMPLETE.search(text)
    return text if not m else text[: m.end() - 1]


def forced_verdict_prefix(text: str) -> str:
    """The assistant turn to read the verdict after: the meta-judgment cut before its first
    verdict line (VERDICT_START; the whole text when it has none), then on a line of its own
    FORCED_VERDICT_PREFIX, whose next token is A or B."""
    m = VERDICT_START.search(text)
    head = (text[:m.start()] if m else text).rstrip()
    return f"{head}\n{FORCED_VERDICT_PREFIX}" if head.strip() else FORCED_VERDICT_PREFIX


def decide_verdict(probs: Sequence[float]) -> str | None:
    """The verdict from [P(A), P(B)]: the more probable letter; None on an exact tie."""
    p_a, p_b = probs
    if p_a == p_b:
        return None
    return "A" if p_a > p_b else "B"


@dataclass(frozen=True)
class Battle:
    """One meta-judgment: judgment `first` shown as A, `second` as B; verdict "A", "B" or None
    (unparseable: counts nowhere, the paper's r = 0)."""
    first: int
    second: int
    verdict: str | None


def battle_orders(n_items: int) -> list[tuple[int, int]]:
    """Every unordered pair in both orders: (m, n) then (n, m), for m < n."""
    return [o for m in range(n_items) for n in range(m + 1, n_items) for o in ((m, n), (n, m))]


def position_weights(battles: Sequence[Battle]) -> tuple[float, float]:
    """The paper's (w1, w2): w1 = win_2nd / (win_1st + win_2nd) weighs a win in first position,
    w2 = win_1st / (win_1st + win_2nd) a win in second position. Then w1 * win_1st = w2 * win_2nd:
    both positions carry the same total weight, so a bias towards either position cancels.
    A meta-judge that only ever picks one position gets weight 0 for all its verdicts.
    The paper counts wins over the meta-judgments it has; pass all of an iteration's battles
    here (not one response's) for the most stable rates. No decisive verdict -> (0.0, 0.0)."""
    win_1st = sum(1 for b in battles if b.verdict == "A")
    win_2nd = sum(1 for b in battles if b.verdict == "B")
    total = win_1st + win_2nd
    if total == 0:
        return 0.0, 0.0
    return win_2nd / total, win_1st / total


def battle_matrix(n_items: int, battles: Sequence[Battle], weights: tuple[float, float]) -> list[list[float]]:
    """B[m][n]: weighted wins of m over n (paper: B_mn = w1 1[r^mn = 1] + w2 1[r^nm = -1],
    summed over the battles given)."""
    w1, w2 = weights
    b = [[0.0] * n_items for _ in range(n_items)]
    for bt in battles:
        if bt.first == bt.second or not (0 <= bt.first < n_items and 0 <= bt.second < n_items):
            raise ValueError(f"bad battle {bt} for {n_items} items")
        if bt.verdict == "A":
            b[bt.first][bt.second] += w1
        elif bt.verdict == "B":
            b[bt.second][bt.first] += w2
        elif bt.verdict is not None:
            raise ValueError(f"verdict must be 'A', 'B' or None, got {bt.verdict!r}")
    return b


def soft_battle_matrix(n_items: int, battles: Sequence[tuple[int, int, float]]) -> list[list[float]]:
    """B[m][n] from expected-mode meta-judgments (meta.scoring expected). A battle (first, second,
    p), p = P(A) = the meta-judge's probability that the judgment shown first is better, adds p
    wins to first over second and 1 - p to second over first. Only battles present in both orders
    count: over the two orders a constant pull b towards position A cancels (each side gains b
    once as A and loses it once as B), as position_weights cancels it for hard verdicts. Hard
    verdicts of a meta-judge that always prefers A weigh nothing; its probabilities still say
    by how much more it prefers one judgment when shown first (a departure: the paper has
    sampled verdicts only)."""
    seen = {(f, s) for f, s, _ in battles}
    b = [[0.0] * n_items for _ in range(n_items)]
    for first, second, p in battles:
        if first == second or not (0 <= first < n_items and 0 <= second < n_items):
            raise ValueError(f"bad battle {(first, second)} for {n_items} items")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"P(A) must be a probability, got {p}")
        if (second, first) in seen:
            b[first][second] += p
            b[second][first] += 1.0 - p
    return b


def bradley_terry(wins: Sequence[Sequence[float]], prior: float = 0.1, tol: float = 1e-12,
                  max_iter: int = 100_000) -> list[float]:
    """Bradley-Terry log-strengths e (mean 0) maximising
    sum_{m != n} (wins[m][n] + prior) * log sigmoid(e_m - e_n), the paper's Elo objective plus
    `prior` pseudo-wins each way for every pair. The prior (not in the paper, which does not say
    how it handles unbeaten judgments) keeps an unbeaten judgment's strength finite.
    Fitted with Hunter's (2004) MM updates p_i <- W_i / sum_j N_ij / (p_i + p_j).
    Multiply by 400 / ln(10) for the chess Elo scale."""
    n = len(wins)
    if prior <= 0:
        raise ValueError("prior must be > 0 (unbeaten items would have infinite strength)")
    if n < 2:
        return [0.0] * n
    w = [[(wins[i][j] + prior) if i != j else 0.0 for j in range(n)] for i in range(n)]
    total_wins = [sum(row) for row in w]
    games = [[w[i][j] + w[j][i] for j in range(n)] for i in range(n)]
    p = [1.0] * n
    for _ in range(max_iter):
        new = [total_wins[i] / sum(games[i][j] / (p[i] + p[j]) for j in range(n) if j != i) for i in range(n)]
        g = math.exp(statistics.fmean(math.log(x) for x in new))  # fix the scale: geometric mean 1
        new = [x / g for x in new]
        done = max(abs(math.log(a) - math.log(b)) for a, b in zip(new, p)) < tol
        p = new
        if done:
            break
    logs = [math.log(x) for x in p]
    mean = statistics.fmean(logs)
    return [x - mean for x in logs]


def elo_scores(n_items: int, battles: Sequence[Battle], weights: tuple[float, float] | None = None,
               prior: float = 0.1) -> list[float]:
    """Strengths of one response's n_items judgments from their battles. `weights` defaults to
    position_weights(battles); pass the iteration-wide weights to follow the paper."""
    if weights is None:
        weights = position_weights(battles)
    return bradley_terry(battle_matrix(n_items, battles, weights), prior)


def select_response(scores_by_response: Sequence[Sequence[float]]) -> int | None:
    """Index of the response whose judgment scores vary most (population variance; ties -> the
    lowest index): the paper meta-judges the judgments the judge was least sure about.
    None when no response has two parsed scores. A best variance of 0 (all judgments agree)
    still returns an index, as in the paper; a caller may skip it."""
    best, best_var = None, -1.0
    for i, scores in enumerate(scores_by_response):
        if len(scores) < 2:
            continue
        v = statistics.pvariance(scores)
        if v > best_var:
            best, best_var = i, v
    return best


def judge_pair(judgments: Sequence[str], strengths: Sequence[float],
               max_chosen_chars: int | None) -> tuple[tuple[int, int] | None, str | None]:
    """((chosen, rejected), None) or (None, reason): the highest-strength judgment is chosen and
    the lowest rejected (ties -> lowest index). Dropped when the strengths tie, or when the
    chosen judgment is longer than max_chosen_chars (the paper's guard against training the
    judge towards ever longer judgments; None = no limit)."""
    if len(judgments) != len(strengths):
        raise ValueError("one strength per judgment")
    if len(judgments) < 2:
        return None, "fewer than 2 judgments"
    chosen = max(range(len(strengths)), key=lambda i: (strengths[i], -i))
    rejected = min(range(len(strengths)), key=lambda i: (strengths[i], i))
    if strengths[chosen] - strengths[rejected] <= STRENGTH_TIE:
        return None, "strengths tie"
    if max_chosen_chars is not None and len(judgments[chosen]) > max_chosen_chars:
        return None, "chosen judgment too long"
    return (chosen, rejected), None


# -- the stages ---------------------------------------------------------------------------------

log = logging.getLogger(__name__)
OVER_CONTEXT = "meta-judge prompt exceeds the context window"
_OPENING_TAG = re.compile(r"[ \t]*<[A-Za-z_ ]+>[ \t]*")


def trains_judge(cfg, t: int) -> bool:
    """Whether iteration t meta-judges and trains the judge (the paper: iterations 1 and 2)."""
    return cfg.method == "meta_rewarding" and t in cfg.meta.judge_iterations


def rubric_of(template: str) -> str:
    """The judge template's instructions for the meta-judge prompt: the text before its first
    placeholder, less a trailing opening tag line such as `<request>`."""
    head = template[:min(template.index(p) for p in ("{prompt}", "{response}"))].rstrip().split("\n")
    if head and _OPENING_TAG.fullmatch(head[-1]):
        head = head[:-1]
    return "\n".join(head).strip()


def _has_score_line(j: JudgmentRecord) -> bool:
    # Only judgments that wrote a valid score line take part: a chosen judgment also teaches the format.
    return j.parsed_score is not None or (j.mode == "parsed" and j.score is not None)


def _score(j: JudgmentRecord) -> float:
    return j.score if j.score is not None else j.parsed_score


def select_judgments(cands: list[CandidateRecord], judgments: list[JudgmentRecord]):
    """Per prompt (in prompt id order), (the candidate whose judgments' scores vary most, its
    judgments with a score line in sample order). Prompts where no candidate has two such
    judgments are left out."""
    by_cand: dict[str, list[JudgmentRecord]] = defaultdict(list)
    for j in judgments:
        if _has_score_line(j):
            by_cand[j.candidate_id].append(j)
    by_prompt: dict[str, list[CandidateRecord]] = defaultdict(list)
    for c in cands:
        by_prompt[c.prompt_id].append(c)
    out = []
    for pid in sorted(by_prompt):
        group = sorted(by_prompt[pid], key=lambda c: c.index)
        lists = [sorted(by_cand.get(c.id, []), key=lambda j: j.sample) for c in group]
        i = select_response([[_score(j) for j in js] for js in lists])
        if i is not None:
            out.append((group[i], lists[i]))
    return out


def run(cfg, rd, t: int, backend: Backend | None) -> dict:
    """The meta_judge stage: every ordered pair of the selected judgments, meta-judged once by M_t."""
    cands = read_jsonl(rd.candidates(t), CandidateRecord)
    judgments = read_jsonl(rd.judgments(t), JudgmentRecord)
    rubric_text = rubric_of(rubric.load_template(cfg.judge.template))
    selected = select_judgments(cands, judgments)
    items = [(c, js[a], js[b]) for c, js in selected for a, b in battle_orders(len(js))]
    params = SamplingParams(n=1, temperature=cfg.meta.temperature, top_p=cfg.meta.top_p,
                            max_new_tokens=cfg.meta.max_new_tokens, stop_repetition=cfg.judge.stop_repetition)

    def work(chunk: list, seed: int) -> list[dict]:
        chats = [[{"role": "user", "content": render_meta(META_JUDGE_TEMPLATE, rubric_text, c.prompt, c.response,
                                                          ja.text, jb.text)}] for c, ja, jb in chunk]
        recs = []
        for (c, ja, jb), comps in zip(chunk, generate_within_context(backend, chats, params, seed)):
            if comps is None:
                text, verdict, error, finish = "", None, OVER_CONTEXT, None
            else:
                text = truncate_after_verdict(comps[0].text)
                verdict, error = parse_meta_verdict(text)
                finish = comps[0].finish_reason
            recs.append(MetaJudgmentRecord(
                id=f"{c.id}-m{ja.sample}v{jb.sample}", prompt_id=c.prompt_id, candidate_id=c.id, judgment_a=ja.id,
                judgment_b=jb.id, text=text, verdict=verdict, error=error, finish_reason=finish,
                parsed_verdict=verdict))
        if cfg.meta.scoring == "expected":
            expected_verdicts(backend, chats, recs)
        return [dataclasses.asdict(r) for r in recs]

    recs = run_chunks(rd.meta_judgments(t), items, cfg.meta.chunk_size, work, (cfg.seed, t, "meta_judge"),
                      f"M{t} meta-judging")
    return summarize(recs) | {"meta/prompts": len({c.prompt_id for c in cands}), "meta/selected": len(selected)}


def expected_verdicts(backend: Backend, chats: list, recs: list[MetaJudgmentRecord]) -> None:
    """meta.scoring=expected: decide each meta-judgment (not over the context window) by
    [P(A), P(B)] after its forced verdict prefix. Where the engine returns no probabilities the
    parsed verdict stays (mode "parsed"), with one warning."""
    need = [i for i, r in enumerate(recs) if r.error != OVER_CONTEXT]
    probs = backend.choice_probs([chats[i] for i in need], [forced_verdict_prefix(recs[i].text) for i in need],
                                 list(VERDICTS)) if need else []
    missing = 0
    for i, p in zip(need, probs):
        r = recs[i]
        if p is None:
            missing += 1
            continue
        r.verdict_probs, r.verdict, r.mode = p, decide_verdict(p), "expected"
        r.verdict_forced = r.parsed_verdict is None
    if missing:
        log.warning("meta.scoring=expected: the engine returned no token probabilities for %d meta-judgments; "
                    "they keep their parsed verdict", missing)


def summarize(recs: list[dict]) -> dict:
    """meta/* metrics of meta-judgment records. parse_failures counts texts without a valid
    verdict line (in either mode); undecided, final verdicts that are None (0 in expected mode
    but for exact ties and prompts over the context window). position_bias: how often the
    judgment shown first wins among the final decisive verdicts (0.5 = no bias).
    mean_verdict_confidence: mean max(P(A), P(B)) of expected-mode verdicts."""
    n = len(recs)
    first = sum(r["verdict"] == "A" for r in recs)
    second = sum(r["verdict"] == "B" for r in recs)
    # In parsed mode the verdict is the parsed one (files from before expected mode have no parsed_verdict).
    parsed = sum((r["verdict"] if r.get("mode", "parsed") == "parsed" else r.get("parsed_verdict")) is not None
                 for r in recs)
    conf = [max(r["verdict_probs"]) for r in recs if r.get("verdict_probs")]
    return {
        "meta/meta_judgments": n,
        "meta/parse_failures": n - parsed,
        "meta/parse_failure_rate": (n - parsed) / n if n else 0.0,
        "meta/undecided": n - first - second,
        "meta/verdicts_forced": sum(bool(r.get("verdict_forced")) for r in recs),
        "meta/mean_verdict_confidence": statistics.fmean(conf) if conf else None,
        "meta/over_context": sum(r["error"] == OVER_CONTEXT for r in recs),
        "meta/position_bias": first / (first + second) if first + second else None,
    }


def build_judge_pairs(cands: list[CandidateRecord], judgments: list[JudgmentRecord],
                      metas: list[MetaJudgmentRecord], template: str, max_chosen_words: int, prior: float = 0.1):
    """Judge pairs from meta-judgments: (pairs, stats). Position weights come from every
    meta-judgment given (the iteration's); per candidate, its judgments (in sample order) get
    Bradley-Terry strengths from its own battles (expected-mode meta-judgments: from their
    P(A) over both orders, soft_battle_matrix; stats["soft_ranked"] counts those
    candidates); chosen = strongest, rejected = weakest (ties -> lowest sample). Dropped:
    strengths tie (e.g. every verdict unparsed: dropped_tie), chosen judgment longer than
    max_chosen_words words (dropped_too_long; 0 = no limit)."""
    cand_by_id = {c.id: c for c in cands}
    jud_by_id = {j.id: j for j in judgments}
    by_cand: dict[str, list[MetaJudgmentRecord]] = defaultdict(list)
    for m in metas:
        by_cand[m.candidate_id].append(m)
    weights = position_weights([Battle(0, 1, m.verdict) for m in metas])
    pairs, stats = [], {"candidates": len(by_cand), "dropped_tie": 0, "dropped_too_long": 0, "soft_ranked": 0}
    for cid in sorted(by_cand):
        ms = by_cand[cid]
        ids = sorted({m.judgment_a for m in ms} | {m.judgment_b for m in ms}, key=lambda i: jud_by_id[i].sample)
        pos = {jid: k for k, jid in enumerate(ids)}
        if all(m.mode == "expected" and m.verdict_probs for m in ms):
            # Expected verdicts: P(A) of both orders, so an A-always meta-judge still ranks.
            stats["soft_ranked"] += 1
            strengths = bradley_terry(soft_battle_matrix(len(ids), [
                (pos[m.judgment_a], pos[m.judgment_b], m.verdict_probs[0]) for m in ms]), prior)
        else:
            strengths = elo_scores(len(ids), [Battle(pos[m.judgment_a], pos[m.judgment_b], m.verdict) for m in ms],
                                   weights, prior)
        texts = [jud_by_id[i].text for i in ids]
        choice, _ = judge_pair(texts, strengths, None)
        if choice is None:
            stats["dropped_tie"] += 1
            continue
        ch, rj = choice
        words = [len(x.split()) for x in texts]
        if max_chosen_words and words[ch] > max_chosen_words:
            stats["dropped_too_long"] += 1
            continue
        cand = cand_by_id[cid]
        pairs.append(JudgePairRecord(
            id=f"{cid}-judge-pair", prompt_id=cand.prompt_id,
            prompt=rubric.render(template, cand.prompt, cand.response),
            chosen=texts[ch], rejected=texts[rj], chosen_id=ids[ch], rejected_id=ids[rj], score_chosen=strengths[ch],
            score_rejected=strengths[rj], chosen_length=len(texts[ch]), rejected_length=len(texts[rj]),
            candidate_id=cid, chosen_words=words[ch], rejected_words=words[rj]))
    stats["weight_first"], stats["weight_second"] = weights
    return pairs, stats


def cap_judge_pairs(judge_pairs: list, n_actor: int, fraction: float | None, seed: str):
    """(kept, dropped): at most floor(f / (1 - f) * n_actor) judge pairs, so judge pairs are at most
    a share f of actor + judge pairs (exact fractions: 0.25 / 0.75 * 6 is 2, not 1.999...). A seeded
    subset keeps its order. fraction None keeps every pair."""
    if fraction is None:
        return list(judge_pairs), 0
    f = Fraction(fraction).limit_denominator(10**6)
    cap = math.floor(f / (1 - f) * n_actor)
    if len(judge_pairs) <= cap:
        return list(judge_pairs), 0
    keep = sorted(random.Random(seed).sample(range(len(judge_pairs)), cap))
    return [judge_pairs[i] for i in keep], len(judge_pairs) - cap


def run_pairs(cfg, rd, t: int) -> dict:
    """The judge_pairs stage."""
    cands = read_jsonl(rd.candidates(t), CandidateRecord)
    judgments = read_jsonl(rd.judgments(t), JudgmentRecord)
    metas = read_jsonl(rd.meta_judgments(t), MetaJudgmentRecord)
    template = rubric.load_template(cfg.judge.template)
    pairs, stats = build_judge_pairs(cands, judgments, metas, template, cfg.meta.max_chosen_words)
    n_actor = len(read_jsonl(rd.pairs(t)))
    kept, dropped = cap_judge_pairs(pairs, n_actor, cfg.meta.judge_pair_fraction, f"judge-mix-{cfg.seed}-{t}")
    if is_main():
        write_jsonl(rd.judge_pairs(t), kept)
    return {f"meta/{k}": v for k, v in stats.items()} | {
        "meta/judge_pairs": len(kept),
        "meta/dropped_mix": dropped,
        "meta/actor_pairs": n_actor,
        "meta/chosen_length": statistics.fmean(p.chosen_length for p in kept) if kept else None,
        "meta/rejected_length": statistics.fmean(p.rejected_length for p in kept) if kept else None,
        "meta/chosen_words": statistics.fmean(p.chosen_words for p in kept) if kept else None,
        "meta/rejected_words": statistics.fmean(p.rejected_words for p in kept) if kept else None,
    }
