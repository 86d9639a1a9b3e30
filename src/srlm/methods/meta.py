"""Meta-Rewarding's meta-judge: the model judges its own judgments (Wu et al. 2024,
arXiv:2407.19594, section 2.3 "Judge Preference Data Creation").

Pure building blocks, no model calls:
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
The stage that calls these writes judge pairs (kind "judge") next to the actor pairs in
DIR/iter_<t>/pairs.jsonl.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import Sequence

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


def render_meta(template: str, rubric: str, prompt: str, response: str, judgment_a: str, judgment_b: str) -> str:
    """Fill the meta-judge template. One pass over the template's own placeholders, so braces
    (or a literal "{response}") inside the inserted texts are never substituted again."""
    values = {"rubric": rubric.strip(), "prompt": prompt.strip(), "response": response.strip(),
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
