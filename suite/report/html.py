"""``reports/index.html``: the report's Markdown as one self-contained HTML page.

Every figure is embedded as a base64 PNG and the stylesheet is inline, so the page reads offline,
with no CDN, no network and no JavaScript. It renders the Markdown subset the reporter writes
(headings, paragraphs, pipe tables, images, ``-`` lists, ``**bold**``, ``*emphasis*``, ``code``
and links), so the HTML and ``summary.md`` always say the same thing.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
nav.toc { border: 1px solid #ddd; padding: 0.5em 1em; margin: 1em 0; font-size: 0.9em; }
nav.toc ul { margin: 0.2em 0; padding-left: 1.2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
code { background: #f5f5f5; padding: 0 0.2em; }
@page { size: A4 landscape; margin: 10mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 9pt; }
  nav.toc { display: none; }
  table { display: table; overflow: visible; width: 100%; font-size: 6.5pt; }
  th, td { padding: 0.1em 0.25em; overflow-wrap: anywhere; }
  thead { display: table-header-group; }
  tr, figure { break-inside: avoid; }
  figure img { max-height: 180mm; }
}
"""

_INLINE = (
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
)
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")


def inline(text: str) -> str:
    """Escape HTML, then apply the inline Markdown the reporter uses."""
    text = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        text = pattern.sub(repl, text)
    return text


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _image(alt: str, src: str, folder: Path) -> str:
    """A figure: the image embedded, its alt text (what it draws) as the caption, its file name as the id."""
    path = folder / src
    if not path.is_file():
        raise FileNotFoundError(f"the report links {src}, which was not written")
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure id="{html.escape(path.stem)}"><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption><strong>{html.escape(path.stem)}</strong>: {inline(alt)}</figcaption></figure>"
    )


def _slug(text: str, taken: set[str]) -> str:
    """A heading's anchor: lower-case words joined by '-', made unique on the page."""
    base = re.sub(r"[^a-z0-9]+", "-", re.sub(r"<[^>]+>", "", text).lower()).strip("-") or "section"
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    taken.add(slug)
    return slug


def _contents(body: list[str]) -> str:
    """A table of contents: the page's second-level headings, linked to their anchors."""
    found = [re.match(r'<h2 id="([^"]+)">(.*)</h2>$', part) for part in body]
    items = "".join(f'<li><a href="#{m.group(1)}">{m.group(2)}</a></li>' for m in found if m)
    return f'<nav class="toc"><strong>Contents</strong><ul>{items}</ul></nav>'


def markdown_to_html(text: str, folder: Path) -> str:
    """The body of the page; ``folder`` is where the Markdown's image paths are relative to."""
    out: list[str] = []
    anchors: set[str] = set()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            title = inline(line[level:].strip())
            out.append(f'<h{level} id="{_slug(title, anchors)}">{title}</h{level}>')
            i += 1
        elif (m := _IMAGE.match(line.strip())) is not None:
            out.append(_image(m.group(1), m.group(2), folder))
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and set(lines[i + 1].replace("|", "")) <= set("-: "):
            head = "".join(f"<th>{inline(c)}</th>" for c in _cells(line))
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in _cells(lines[i])) + "</tr>")
                i += 1
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "- ", "![")):
                para.append(lines[i])
                i += 1
            out.append(f"<p>{inline(' '.join(para))}</p>")
    if out and out[0].startswith("<h1"):  # the contents after the title
        out.insert(1, _contents(out))
    return "\n".join(out)


def write_html(text: str, folder: Path, title: str) -> Path:
    """Write ``folder/index.html`` from the report's Markdown ``text``."""
    body = markdown_to_html(text, folder)
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
    path = folder / "index.html"
    path.write_text(page)
    return path
