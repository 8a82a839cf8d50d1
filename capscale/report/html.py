"""A report is a folder: ``index.html`` beside ``plots/*.png`` and ``tables/*.csv``.

The page is static HTML with its style inline and relative links only: it opens from disk,
offline, in any browser, and the folder can be copied or zipped as a whole. Plots and tables
are written as they are added; the page last, atomically, so a reader never sees a page that
points at a missing file.
"""

from __future__ import annotations

import html
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from capscale.io import atomic_write_text, write_table

PLOTS = "plots"
TABLES = "tables"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 1.5em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.55em; text-align: right; }
th { background: #f5f5f5; } td:first-child, th:first-child { text-align: left; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4em 0.8em; }
.ok { color: #1b7f3b; } .bad { color: #b3261e; }
tr.unid td { color: #999; background: #f7f7f7; } tr.unid td.unidv { font-style: italic; }
nav a { margin-right: 1em; } code { background: #f3f3f3; padding: 0 0.2em; }
"""


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else ""
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v)


@dataclass
class Report:
    """Sections of text, figures and tables, written to ``folder``."""

    folder: Path
    title: str
    subtitle: str = ""
    parts: list[str] = field(default_factory=list)
    toc: list[tuple[str, str]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.folder = Path(self.folder)
        (self.folder / PLOTS).mkdir(parents=True, exist_ok=True)
        (self.folder / TABLES).mkdir(parents=True, exist_ok=True)

    def plot_path(self, name: str) -> Path:
        return self.folder / PLOTS / name

    def section(self, title: str, text: str = "") -> None:
        anchor = "s" + str(len(self.toc) + 1)
        self.toc.append((anchor, title))
        self.parts.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')
        if text:
            self.text(text)

    def text(self, text: str, raw: bool = False) -> None:
        """A paragraph (escaped), or raw HTML with ``raw``."""
        self.parts.append(text if raw else f"<p>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def image(self, path: str | os.PathLike, caption: str = "") -> None:
        """A figure; ``path`` must lie inside the report folder (plots are made with
        :meth:`plot_path`)."""
        rel = Path(os.path.relpath(Path(path).resolve(), self.folder.resolve())).as_posix()
        if rel.startswith(".."):
            raise ValueError(f"{path} is outside the report folder {self.folder}")
        self.images.append(rel)
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption or rel)}">'
                          f"{cap}</figure>")

    def table(self, df: pd.DataFrame, name: str, caption: str = "", max_rows: int = 60,
              columns: list[str] | None = None, unidentified: dict | None = None,
              value_columns: list[str] | None = None) -> Path:
        """Write ``df`` to ``tables/NAME.csv`` and show it (the first ``max_rows`` rows, the
        chosen ``columns``) with a link to the file. ``unidentified`` maps row positions to
        the reason their numbers are not identified: those rows are greyed and their
        ``value_columns`` read "not identified" instead of a number."""
        path = write_table(df, self.folder / TABLES / f"{name}.csv")
        shown = df[columns] if columns else df
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
        unidentified = unidentified or {}
        hide = set(value_columns or [])
        rows = []
        for i, (_, r) in enumerate(shown.head(max_rows).iterrows()):
            why = unidentified.get(i)
            if why is None:
                rows.append("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>")
                continue
            cells = ['<td class="unidv">not identified</td>' if c in hide
                     else f"<td>{html.escape(_fmt(v))}</td>" for c, v in r.items()]
            rows.append(f'<tr class="unid" title="{html.escape(why)}">' + "".join(cells) + "</tr>")
        more = (f" (first {max_rows} of {len(df)} rows)" if len(df) > max_rows else "")
        link = f'<a href="{TABLES}/{html.escape(name)}.csv">{html.escape(name)}.csv</a>'
        cap = f"<p class=\"meta\">{html.escape(caption)} {link}{more}</p>" if caption else \
            f"<p class=\"meta\">{link}{more}</p>"
        self.parts.append(f"{cap}<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
                          "</tbody></table>")
        return path

    def render(self) -> str:
        nav = " ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in self.toc)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        sub = f"<p>{html.escape(self.subtitle)}</p>" if self.subtitle else ""
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1>{sub}"
                f"<p class=\"meta\">made by capscale on {stamp}</p><nav>{nav}</nav>"
                + "\n".join(self.parts) + "</body></html>\n")

    def write(self) -> Path:
        missing = [p for p in self.images if not (self.folder / p).exists()]
        if missing:
            raise FileNotFoundError(f"report images missing: {missing}")
        return atomic_write_text(self.folder / "index.html", self.render())
