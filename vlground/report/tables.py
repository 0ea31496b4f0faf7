"""HTML tables that read whole at 1280 px and on paper.

A table never scrolls sideways and never hides rows in a scroll box:

* cells wrap (numbers are short: :mod:`vlground.numbers`, 3 significant digits, effects signed as
  in the key findings and the claims; text breaks anywhere it must), headers wrap at their words
  (``reverse_info_gain`` -> "rev. info gain");
* long column names are abbreviated and the abbreviations are explained in a legend under the table;
* a table with more than :data:`MAX_COLS` columns is split into parts that repeat its identifying
  columns (run, step, layer ...);
* a table with more than :data:`SUMMARY_ROWS` + :data:`SLACK` rows shows its first rows and the
  rest in a ``<details>`` block right below (same header), which opens for printing (the print
  stylesheet of :mod:`vlground.report.html`), so paper shows every row;
* columns that are always empty are left out; raw columns (paths, keys, timings) stay in the CSVs.
"""
from __future__ import annotations

import html

from vlground import numbers

#: most columns in one table part (identifying columns included); wider tables are split
MAX_COLS = 13
#: rows shown before the rest goes into a <details> block
SUMMARY_ROWS = 15
#: a table at most this many rows longer than SUMMARY_ROWS is shown whole (no "3 more rows" fold)
SLACK = 5
#: columns that identify a row: repeated in every part of a split table
ID_COLS = ("run", "group", "seed", "step", "layer", "head", "word", "detector", "head_type", "kind", "at")
#: columns never shown in the page (they are in the CSV / Parquet files)
RAW_COLS = ("key", "path", "item_id", "pair_id")

#: word -> (abbreviation, meaning) used in headers; the legend lists those a table uses
ABBREV = {
    "reverse": ("rev.", "reverse direction: w<ENV> read given w<LAN>"),
    "surprisal": ("surpr.", "surprisal, nats: -log p(target | context)"),
    "mismatch": ("mism.", "mismatched environment"),
    "intervention": ("interv.", "the tested heads zeroed"),
    "control": ("ctrl.", "as many random control heads zeroed"),
    "original": ("orig.", "no head zeroed"),
    "aggregate": ("aggr.", "aggregate head(s)"),
    "saliency": ("sal.", "saliency"),
}


def is_p_column(col: str) -> bool:
    """Columns that hold p-values (formatted with :func:`vlground.numbers.pval`)."""
    return (col in ("p", "p_value", "p_corrected", "pval") or col.endswith((" p", "_p", "p_value", "p_corrected"))
            or col.startswith("p "))


def is_effect_column(col: str) -> bool:
    """Columns that hold an effect (information gain, a difference: written with a sign, as the
    key findings and the claims write it: :func:`vlground.numbers.signed`)."""
    c = col.replace("_", " ")
    return "info gain" in c or "information gain" in c or c in ("effect", "gain")


def header(col: str, used: set[str] | None = None) -> str:
    """A column name as a wrapping header, with long words abbreviated (noted in ``used``)."""
    words = col.replace("_", " ").replace("@", " @").split(" ")
    out = []
    for w in words:
        if w in ABBREV and len(words) > 1:
            out.append(ABBREV[w][0])
            if used is not None:
                used.add(w)
        else:
            out.append(w)
    return " ".join(out)


def cell(col: str, v) -> str:
    """One cell's HTML (escaped): p-values as p-values, numbers with 3 significant digits."""
    if is_p_column(col) and not isinstance(v, str):
        return numbers.pval(v)
    if is_effect_column(col) and not isinstance(v, (str, bool, list, dict)):
        return html.escape(numbers.signed(v))
    return html.escape(numbers.cell(v))


def _columns(rows: list[dict], cols: list[str] | None) -> list[str]:
    if cols is None:
        cols = []
        for r in rows:
            cols.extend(k for k in r if k not in cols and not isinstance(r[k], (list, dict)))
        cols = [c for c in cols if c not in RAW_COLS]
    return [c for c in cols if any(not numbers._missing(r.get(c)) and r.get(c) != "" for r in rows)]


def _parts(cols: list[str], max_cols: int) -> list[list[str]]:
    if len(cols) <= max_cols:
        return [cols]
    ids = [c for c in cols if c in ID_COLS]
    if "run" in ids and "group" in ids:
        ids.remove("group")  # a run names its group
    ids = ids[: max(1, max_cols // 2)]
    rest = [c for c in cols if c not in ids]
    width = max(1, max_cols - len(ids))
    n = -(-len(rest) // width)
    size = -(-len(rest) // n)  # even parts
    return [ids + rest[i:i + size] for i in range(0, len(rest), size)]


def _text_col(rows: list[dict], col: str) -> bool:
    return any(isinstance(r.get(col), str) for r in rows)


def _rows_html(rows: list[dict], cols: list[str], text_cols: set[str]) -> str:
    return "".join("<tr>" + "".join(f"<td{' class=t' if c in text_cols else ''}>{cell(c, r.get(c))}</td>" for c in cols)
                   + "</tr>" for r in rows)


def _one(rows: list[dict], cols: list[str], used: set[str], caption: str = "") -> str:
    text_cols = {c for c in cols if _text_col(rows, c)}
    head = "<thead><tr>" + "".join(f"<th>{html.escape(header(c, used))}</th>" for c in cols) + "</tr></thead>"
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    if len(rows) <= SUMMARY_ROWS + SLACK:
        return f"<table class=data>{cap}{head}<tbody>{_rows_html(rows, cols, text_cols)}</tbody></table>"
    first, rest = rows[:SUMMARY_ROWS], rows[SUMMARY_ROWS:]
    return (f"<table class=data>{cap}{head}<tbody>{_rows_html(first, cols, text_cols)}</tbody></table>"
            f"<details class=more><summary>{len(rest)} more rows (all {len(rows)} in the CSV)</summary>"
            f"<table class=data>{head}<tbody>{_rows_html(rest, cols, text_cols)}</tbody></table></details>")


def table(rows: list[dict], cols: list[str] | None = None, *, max_cols: int = MAX_COLS, note: str = "") -> str:
    """An HTML table of ``rows`` (dicts) over ``cols`` (default: every scalar column in order),
    readable whole at 1280 px: see the module docstring. ``note``: text under the table."""
    if not rows:
        return "<p class=note>No rows.</p>"
    cols = _columns(rows, cols)
    if not cols:
        return "<p class=note>No values.</p>"
    used: set[str] = set()
    parts = _parts(cols, max_cols)
    bodies = [_one(rows, p, used, caption=f"part {i + 1} of {len(parts)}" if len(parts) > 1 else "")
              for i, p in enumerate(parts)]
    legend = "; ".join(f"{ABBREV[w][0]} = {ABBREV[w][1]}" for w in ABBREV if w in used)
    extra = " ".join(x for x in (html.escape(legend) + "." if legend else "", note) if x)
    return f"<div class=tbl>{''.join(bodies)}{f'<p class=legend>{extra}</p>' if extra else ''}</div>"
