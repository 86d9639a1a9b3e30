"""Laying out a page of sections with the Jinja2 templates in templates/, and writing it.

One list of sections gives both files in OUT: index.html (self-contained: inline CSS, plots as
base64 PNG, no scripts, no external resources; autoescaped) and report.md (the plots as PNG files
next to it). Texts written by the report may mark code with `backticks` (the `inline` filter).
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import jinja2
from markupsafe import Markup, escape

from srlm.run.records import atomic_write_text

from .load import warn
from .sections import Section
from .tables import Table


@dataclass
class Page:
    title: str
    subtitle: str  # under the title; `backticks` mark code
    sections: list[Section]
    footer: str = ""  # HTML only
    tab_title: str = ""  # the HTML <title>; the title if empty


def build_sections(builders: list[Callable[..., Section]], *args: Any) -> list[Section]:
    """builder(*args) for each builder; one that fails becomes a section saying so (and a warning)."""
    out = []
    for fn in builders:
        try:
            out.append(fn(*args))
        except Exception as e:  # noqa: BLE001 - a report of a broken run is still worth having
            name = fn.__name__.removesuffix("_section")
            warn(f"section {name} failed: {type(e).__name__}: {e}")
            out.append(Section(name, name.replace("_", " ").capitalize(),
                               intro=f"This section failed: {type(e).__name__}: {e}"))
    return out


CODE_SPAN = re.compile(r"`([^`]+)`")


@jinja2.pass_eval_context
def _inline(ctx, text: Any) -> Any:
    """`code` spans as <code> in HTML (the rest escaped); Markdown keeps them as they are."""
    text = "" if text is None else str(text)
    if not ctx.autoescape:
        return text
    return Markup(CODE_SPAN.sub(r"<code>\1</code>", str(escape(text))))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _md_cell(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def _md_block(text: Any, lang: str = "text") -> str:
    """A fenced block longer than any run of backticks inside the text, so the text cannot end it."""
    text = "" if text is None else str(text)
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("srlm.evaluation.report", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
)
ENV.filters.update(inline=_inline, b64=_b64, md_cell=_md_cell, md_block=_md_block)


def md_table(table: Table) -> str:
    """One table as Markdown (the macro report.md.j2 uses)."""
    return str(ENV.get_template("macros.md.j2").module.table(table))


def html_table(table: Table) -> str:
    """One table as HTML (the macro report.html.j2 uses)."""
    return str(ENV.get_template("macros.html.j2").module.table(table))


def render_html(page: Page) -> str:
    return ENV.get_template("report.html.j2").render(page=page)


def render_md(page: Page) -> str:
    return ENV.get_template("report.md.j2").render(page=page).rstrip("\n") + "\n"


def write_page(page: Page, out_dir: str) -> str:
    """Write OUT/index.html, OUT/report.md and its PNGs; return the path of index.html."""
    os.makedirs(out_dir, exist_ok=True)
    for plot in (p for s in page.sections for p in s.plots):
        png = os.path.join(out_dir, f"{plot.name}.png")
        if plot.png:
            with open(png, "wb") as f:
                f.write(plot.png)
        elif os.path.exists(png):
            os.remove(png)  # a plot from an earlier build that no longer has data
    index = os.path.join(out_dir, "index.html")
    atomic_write_text(os.path.join(out_dir, "report.md"), render_md(page))
    atomic_write_text(index, render_html(page))
    return index
