"""How report values are written as text: one rule for every table, card and plot label.

Missing, None and NaN values are "-" everywhere, so a partial run never shows "None" or "null".
"""

from __future__ import annotations

import re
from typing import Any

MAX_TEXT_CHARS = 1500  # longer prompts, responses and judgments are clipped in the examples


def num(v: Any) -> float | None:
    """A plottable number, or None (bools, NaN, strings and missing values are not numbers)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return None
    return float(v)


def fmt(v: Any) -> str:
    """A metric value as text; None and missing values are '-'."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    if isinstance(v, float):
        if v != v:  # NaN
            return "-"
        if v.is_integer() and abs(v) < 1e15:
            return fmt(int(v))
        if abs(v) >= 10000:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    if isinstance(v, dict):
        if v and all(re.fullmatch(r"\d+", str(k)) for k in v):  # a score histogram
            return " ".join(f"{k}:{fmt(n)}" for k, n in sorted(v.items(), key=lambda kv: int(kv[0])))
        return "; ".join(f"{k}: {fmt(n)}" for k, n in v.items()) if v else "-"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def pct(v: Any, digits: int = 1) -> str:
    """A rate in [0, 1] as a percentage; anything else is '-'."""
    x = num(v)
    return f"{100 * x:.{digits}f}%" if x is not None else "-"


def ci(v: Any) -> str:
    """A [low, high] confidence interval of a rate, in percent."""
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(num(x) is not None for x in v):
        return f"[{100 * v[0]:.1f}, {100 * v[1]:.1f}]%"
    return "-"


def pts(v: Any, digits: int = 1) -> str:
    """A difference of two rates in percentage points, signed: +3.2 pts; anything else is '-'."""
    x = num(v)
    return f"{100 * x:+.{digits}f} pts" if x is not None else "-"


def ci_pts(v: Any) -> str:
    """A [low, high] interval of a difference of rates, in signed percentage points."""
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(num(x) is not None for x in v):
        return f"[{100 * v[0]:+.1f}, {100 * v[1]:+.1f}] pts"
    return "-"


def seconds(v: Any) -> str:
    """A duration: seconds below a minute, else h:mm:ss / m:ss."""
    x = num(v)
    if x is None:
        return "-"
    if x < 60:
        return f"{x:.1f} s"
    s = round(x)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def clip(text: Any, limit: int = MAX_TEXT_CHARS) -> str:
    text = "" if text is None else str(text)
    if len(text) <= limit:
        return text
    return text[:limit].rstrip() + f"\n… [{len(text) - limit:,} more characters]"


def model_key(name: str) -> tuple[int, str]:
    """Sort order of model names: M0, M1, M2, ..., M10, then anything else by name."""
    m = re.fullmatch(r"M(\d+)", name)
    return (int(m.group(1)), "") if m else (10 ** 9, name)


def comparison_label(key: str) -> str:
    """'M2_vs_M1' (a key of eval.win_rate) as 'M2 vs M1'."""
    return key.replace("_vs_", " vs ")


def comparison_order(key: str) -> tuple:
    x, _, y = key.partition("_vs_")
    return model_key(x), model_key(y)
