"""report.html: the run's Markdown report as one self-contained HTML page, its figures embedded.

``dvc plots show`` writes an HTML page that loads its renderer (Vega) from a CDN, so offline only its PNGs show.
This page needs nothing but a browser: no script, no stylesheet or font from elsewhere, the PNGs inlined as
``data:`` URIs. It converts the Markdown :func:`hjcag.train.report.markdown_report` writes (headings, paragraphs,
pipe tables, bullet lists, images, links, ``**bold**`` and ``code``), not Markdown at large.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from pathlib import Path

from hjcag.artifacts import REPORT_FILE

HTML_REPORT_FILE = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; }
code { background: #f2f2f2; padding: 0 0.2rem; }
"""

_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str, images: Mapping[str, bytes]) -> str:
    out = html.escape(text.replace("\\\\", "\\"), quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)

    def link(match: re.Match[str]) -> str:
        target = match.group(2)
        href = f"#{target}" if target in images else target  # an embedded figure: jump to it on this page
        return f'<a href="{html.escape(href)}">{match.group(1)}</a>'

    return _LINK.sub(link, out)


def _image(alt: str, src: str, images: Mapping[str, bytes]) -> str:
    if src not in images:
        return f'<p><a href="{html.escape(src)}">{html.escape(alt)}</a></p>'
    data = base64.b64encode(images[src]).decode("ascii")
    return (f'<figure id="{html.escape(src)}"><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def _table(rows: list[str], images: Mapping[str, bytes]) -> str:
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    body = [r for r in cells[1:] if not all(set(c) <= set("-: ") for c in r)]  # drop the |---| separator
    head = "".join(f"<th>{_inline(c, images)}</th>" for c in cells[0])
    lines = ["<table>", f"<thead><tr>{head}</tr></thead>", "<tbody>"]
    lines += ["<tr>" + "".join(f"<td>{_inline(c, images)}</td>" for c in r) + "</tr>" for r in body]
    return "\n".join([*lines, "</tbody>", "</table>"])


def markdown_to_html(markdown: str, images: Mapping[str, bytes]) -> str:
    """A whole HTML page of `markdown`; images whose source is a key of `images` are embedded (PNG bytes)."""
    blocks: list[str] = []
    title = "report"
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line:
            i += 1
            continue
        if line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            blocks.append(_table(lines[i:j], images))
            i = j
            continue
        if line.startswith("- "):
            j = i
            while j < len(lines) and lines[j].startswith("- "):
                j += 1
            blocks.append("<ul>" + "".join(f"<li>{_inline(x[2:], images)}</li>" for x in lines[i:j]) + "</ul>")
            i = j
            continue
        heading = re.match(r"^(#{1,6}) (.*)$", line)
        image = _IMAGE.match(line)
        if heading:
            level = len(heading.group(1))
            if level == 1:
                title = heading.group(2)
            blocks.append(f"<h{level}>{_inline(heading.group(2), images)}</h{level}>")
        elif image:
            blocks.append(_image(image.group(1), image.group(2), images))
        else:
            j = i + 1
            while j < len(lines) and lines[j].strip() and not lines[j].startswith(("|", "- ", "#", "![")):
                j += 1
            blocks.append(f"<p>{_inline(' '.join(x.strip() for x in lines[i:j]), images)}</p>")
            i = j
            continue
        i += 1
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>", *blocks,
        "</body>", "</html>", "",
    ])


def write_html_report(folder: Path) -> Path:
    """`folder`/report.md and the PNGs beside it -> `folder`/report.html (figures embedded)."""
    folder = Path(folder)
    markdown = (folder / REPORT_FILE).read_text(encoding="utf-8")
    images = {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}
    out = folder / HTML_REPORT_FILE
    out.write_text(markdown_to_html(markdown, images), encoding="utf-8")
    return out
