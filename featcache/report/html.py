"""One self-contained report.html: tables, charts as base64 PNG, the store's configurations (folded
away in <details>), and the whole result as JSON. Tables print numbers to 3 decimals (the JSON, and
compare.json beside it, hold them whole); an interval is one cell, "0.910 [0.880, 0.940]"."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

READY_TITLE = "featcache compare report"
DECIMALS = 3

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f0f0f0; } td.text { text-align: left; white-space: nowrap; }
.scroll { overflow-x: auto; } summary { cursor: pointer; margin: 0.5em 0; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 12px; }
"""


@dataclass
class Report:
    title: str
    notes: list[str] = field(default_factory=list)  # above the tables
    tables: list[tuple[str, list[dict], list[str]]] = field(default_factory=list)  # heading, rows, columns
    charts: list[tuple[str, Path]] = field(default_factory=list)  # heading, PNG
    configs: dict[str, dict] = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # embedded as JSON
    footnotes: list[str] = field(default_factory=list)  # after the tables: skipped entries and such asides

    @property
    def page_title(self) -> str:
        """The <title>: the report's own, with the leaderboard's size when the data has one."""
        board = self.data.get("leaderboard")
        return f"{READY_TITLE} ({len(board)} entries)" if isinstance(board, list) else READY_TITLE


def number(v: float) -> str:
    return f"{v:.{DECIMALS}f}"


def interval_cell(mean: float, low: float, high: float) -> str:
    """A mean and its interval as one cell: "0.910 [0.880, 0.940]"."""
    return f"{number(mean)} [{number(low)}, {number(high)}]"


def cell(v) -> str:
    """Floats to 3 decimals, whole numbers and text as they are."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return number(v)
    return html.escape(str(v))


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"text" if isinstance(r.get(c), str) else "num"}" data-col="{html.escape(c)}">'
                         f"{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def render(report: Report) -> str:
    parts = [f"<h1>{html.escape(report.title)}</h1>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in report.notes]
    for heading, rows, columns in report.tables:
        parts.append(f"<h2>{html.escape(heading)}</h2>{_table(rows, columns)}")
    parts += [f'<p class="footnote">{html.escape(n)}</p>' for n in report.footnotes]
    for heading, png in report.charts:
        data = base64.b64encode(Path(png).read_bytes()).decode()
        parts.append(f'<h2>{html.escape(heading)}</h2><img alt="{html.escape(heading)}" '
                     f'src="data:image/png;base64,{data}">')
    if report.configs:
        parts.append("<h2>Feature configurations in the store</h2>")
        parts += [f"<details><summary>{html.escape(k)}</summary><pre>{html.escape(json.dumps(c, indent=2))}</pre>"
                  "</details>" for k, c in report.configs.items()]
    payload = json.dumps(report.data, default=str).replace("</", "<\\/")  # no early </script>
    # marks the page once the scripts ran (the embedded JSON parsed): a headless browser check reads it
    script = ('const data = JSON.parse(document.getElementById("featcache-data").textContent);'
              'document.body.dataset.ready = "yes";')
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(report.page_title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}"
            f'<script type="application/json" id="featcache-data">{payload}</script>'
            f"<script>{script}</script></body></html>")


def write_report(report: Report, path: Path) -> Path:
    path = Path(path)
    path.write_text(render(report), encoding="utf-8")
    return path
