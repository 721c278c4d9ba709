"""report.html: one self-contained page (inline CSS, every image a base64 data: URI, no scripts)."""
from __future__ import annotations

import base64
import html
import json
from typing import Any, Sequence

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}
.met{color:#0a7d27;font-weight:600}.unmet{color:#b3261e;font-weight:600}.na{color:#777}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em;margin:.8em 0}
img{max-width:100%;image-rendering:pixelated;border:1px solid #ddd;margin:.3em 0}
figure{margin:0 0 1em}figcaption{font-size:.85em;color:#555}
pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.8em;max-height:40em}
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(x: Any, digits: int | None = None) -> str:
    """Floats: 2 decimals from 10 up, else 3 (SSIM, fractions); None as a dash."""
    if x is None:
        return "&ndash;"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        d = digits if digits is not None else (2 if abs(x) >= 10 else 3)
        return f"{x:.{d}f}"
    return esc(x)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """An HTML table; the first `left` columns are left-aligned. Cells: str (escaped) or raw html via Raw."""
    def cell(tag, i, v):
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{v.html if isinstance(v, Raw) else fmt(v)}</{tag}>"

    out = ["<table><tr>", *[cell("th", i, h) for i, h in enumerate(header)], "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "".join(out)


class Raw:
    """Trusted HTML for a table cell."""

    def __init__(self, html_text: str):
        self.html = html_text


def status(met: bool | None) -> Raw:
    if met is None:
        return Raw('<span class="na">n/a</span>')
    return Raw('<span class="met">met</span>' if met else '<span class="unmet">not met</span>')


def figure(png: bytes, caption: str, alt: str) -> str:
    return (f'<figure><img src="{data_uri(png)}" alt="{esc(alt)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    body = "".join(f'<h2 id="{esc(anchor(h))}">{esc(h)}</h2>{content}' for h, content in sections)
    toc = " &middot; ".join(f'<a href="#{esc(anchor(h))}">{esc(h)}</a>' for h, _ in sections)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p>{toc}</p>{body}</body></html>\n")


def anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())


def pre_json(obj: Any) -> str:
    return f"<pre>{esc(json.dumps(obj, indent=2, sort_keys=True, default=str))}</pre>"
