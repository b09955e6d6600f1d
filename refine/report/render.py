"""The report page: one HTML string with its styles, script, data and charts inline.

Every value from the run (document text, URLs, ids, config) is escaped here, server-side; the
script only reads numbers from the embedded JSON and writes them with textContent. The JSON is
escaped so that no "</script>" (or any "<") in it can end its block.
"""

from __future__ import annotations

import datetime as dt
import json
from html import escape
from importlib.resources import files
from typing import Any

from refine.report.ablation import html_section
from refine.report.whatif import STAGE_THRESHOLDS
from refine.stages import EXACT_DEDUP, FUZZY_DEDUP, URL_DEDUP
from refine.stats import OPTIONAL_STAGES

HIST_WIDTH, HIST_HEIGHT = 720, 120


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _n(value: float | int | None) -> str:
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "–"


def script_json(payload: Any) -> str:
    """JSON for a <script type="application/json"> block: '<', '>', '&' and the line separators
    JavaScript treats as newlines are written as \\u escapes."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                       ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, code)
    return text


def _marked(text: str, marks: list[tuple[int, int, str]], css: str = "") -> str:
    out, at = [], 0
    for start, end, label in sorted(marks):
        start, end = max(start, at), min(end, len(text))
        if end <= start:
            continue
        out.append(_e(text[at:start]))
        cls = f' class="{css}"' if css else ""
        out.append(f'<mark{cls} title="{_e(label)}">{_e(text[start:end])}</mark>')
        at = end
    out.append(_e(text[at:]))
    return "".join(out)


def _example(ex: dict[str, Any], css: str = "") -> str:
    head = [f"id {_e(ex['id'])}"]
    if ex.get("url"):
        head.append(f"url {_e(ex['url'])}")
    if ex.get("language"):
        head.append(f"language {_e(ex['language'])}")
    if ex.get("duplicate_of"):
        head.append(f"duplicate of {_e(ex['duplicate_of'])}")
    if ex.get("tokens"):
        head.append(f"span of {ex['tokens']} tokens at characters {ex['start']}–{ex['end']}")
    metrics = ", ".join(f"{_e(k.split('.', 1)[-1])} {v:.4g}" for k, v in
                        sorted(ex.get("metrics", {}).items()))
    if metrics:
        head.append(metrics)
    text = ex["text"]
    more = ex.get("text_chars", len(text)) - len(text)
    tail = f"\n… ({more:,} more characters not shown)" if more > 0 else ""
    return (f'<div class="ex"><div class="exhead">{" · ".join(head)}</div>'
            f'<pre class="doc">{_marked(text, ex.get("highlights", []), css)}{_e(tail)}</pre>'
            "</div>")


def _alarms(data: dict[str, Any]) -> str:
    """The accounting verdict (refine.accounting, as `refine stats` prints it), then warnings
    that do not change it."""
    stats, verdict = data["stats"], data["accounting"]
    warnings = list(data["notes"])
    warnings.extend(f"{w['stage']}: {w['inconsistent']} documents it dropped pass all its "
                    "checks by their stored metrics (the what-if counts may be off)"
                    for w in data["whatif"] if w["inconsistent"])
    notes = ""
    if warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in dict.fromkeys(warnings))
        notes = f'<div id="warnings" class="banner alarm">Warnings<ul>{items}</ul></div>'
    if verdict["ok"]:
        docs = stats["documents"]
        return (f'<div id="accounting" class="banner ok" data-ok="true">Accounting OK: '
                f'{_n(docs["read"])} read = {_n(docs["kept"])} kept + {_n(docs["rejected"])} '
                f"rejected, for every one of {len(data['files'])} inputs, and the rows in data/ "
                f"and rejected/ agree.</div>{notes}")
    items = "".join(f"<li>{_e(p)}</li>" for p in dict.fromkeys(verdict["problems"]))
    return (f'<div id="accounting" class="banner alarm" data-ok="false">Accounting check '
            f"FAILED<ul>{items}</ul></div>{notes}")


def _funnel(data: dict[str, Any]) -> str:
    rows, bars = [], []
    width, row_h = 520, 22
    funnel = data["funnel"]
    for i, row in enumerate(funnel):
        y = i * row_h
        docs_w = width * row["docs_pct"] / 100
        bars.append(f'<text x="0" y="{y + 15}">{_e(row["stage"])}</text>'
                    f'<rect x="110" y="{y + 3}" width="{docs_w:.1f}" height="8" fill="#4a7bd0">'
                    f'<title>{_e(row["stage"])}: {_n(row["docs"])} documents</title></rect>')
        if row["words_pct"] is not None:
            words_w = width * row["words_pct"] / 100
            bars.append(f'<rect x="110" y="{y + 11}" width="{words_w:.1f}" height="8" '
                        f'fill="#e39b3c"><title>{_n(row["words"])} words</title></rect>')
        bars.append(f'<text x="{110 + width + 6}" y="{y + 15}">{row["docs_pct"]:.1f}%</text>')
        words_pct = f"{row['words_pct']:.1f}%" if row["words_pct"] is not None else "–"
        rows.append(
            f'<tr data-stage="{_e(row["stage"])}"><td class="l">{_e(row["stage"])}</td>'
            f'<td class="docs" data-value="{row["docs"]}">{_n(row["docs"])}</td>'
            f'<td>{row["docs_pct"]:.1f}%</td><td>{_n(row["dropped"])}</td>'
            f'<td class="words" data-value="{row["words"] if row["words"] is not None else ""}">'
            f'{_n(row["words"])}</td><td>{words_pct}</td></tr>')
    height = len(funnel) * row_h + 4
    svg = (f'<svg width="{110 + width + 60}" height="{height}" role="img" '
           f'aria-label="documents and words remaining after each stage">{"".join(bars)}</svg>')
    legend = ('<p class="small"><span class="bar" style="width:18px"></span> documents, % of '
              'records read · <span class="bar" style="width:18px;background:#e39b3c"></span> '
              "words, % of words after extraction</p>")
    table = ('<table id="funnel"><tr><th class="l">after stage</th><th>documents</th><th>% of '
             "read</th><th>dropped</th><th>words</th><th>% of extracted</th></tr>"
             + "".join(rows) + "</table>")
    return svg + legend + table


def _stages(stats: dict[str, Any]) -> str:
    rows = []
    for name, s in stats["stages"].items():
        dropped = sum(s["rejected"].values())
        mb_s = (s["bytes_in"] / 1e6 / s["cpu_s"]) if s.get("cpu_s") else None
        rows.append(f'<tr><td class="l">{_e(name)}</td><td>{_n(s["in"])}</td><td>{_n(s["out"])}'
                    f'</td><td>{_n(dropped)}</td><td>{s["cpu_s"]:.2f}</td>'
                    f'<td>{_n(s.get("docs_per_cpu_s"))}</td><td>{s["bytes_in"] / 1e6:.2f}</td>'
                    f'<td>{s["bytes_out"] / 1e6:.2f}</td><td>{_n(mb_s)}</td></tr>')
    launch = stats.get("last_launch")
    tail = ""
    if launch:
        tail = (f'<p class="small">Last launch: {launch["units"]} units in '
                f'{launch["wall_s"]:.1f} s wall, {launch["docs_per_s"]} docs/s with '
                f'{launch["workers"]} workers.</p>')
    return ('<table><tr><th class="l">stage</th><th>in</th><th>out</th><th>dropped</th>'
            "<th>CPU s</th><th>docs / CPU s</th><th>MB in</th><th>MB out</th><th>MB / CPU s</th>"
            "</tr>" + "".join(rows) + "</table>" + tail)


def _reasons(data: dict[str, Any]) -> str:
    stats = data["stats"]
    read = stats["documents"]["read"]
    out = []
    for name, s in stats["stages"].items():
        if not s["rejected"]:
            continue
        dropped = sum(s["rejected"].values())
        out.append(f'<h3>{_e(name)}: {_n(dropped)} dropped ({_pct(dropped, s["in"])} of its '
                   f"input)</h3>")
        rows, details = [], []
        for reason, count in sorted(s["rejected"].items(), key=lambda kv: -kv[1]):
            key = f"{name}.{reason}"
            words = data["reason_words"].get(key)
            rows.append(f'<tr data-reason="{_e(key)}"><td class="l">{_e(reason)}</td>'
                        f"<td>{_n(count)}</td><td>{_pct(count, dropped)}</td>"
                        f"<td>{_pct(count, s['in'])}</td><td>{_pct(count, read)}</td>"
                        f"<td>{_n(words)}</td></tr>")
            examples = data["examples"].get(key, [])
            if examples:
                details.append(f"<details><summary>{_e(reason)}: {len(examples)} sampled of "
                               f"{_n(count)}</summary>"
                               + "".join(_example(ex) for ex in examples) + "</details>")
        out.append('<table><tr><th class="l">reason</th><th>documents</th><th>share of stage '
                   "drops</th><th>% of stage input</th><th>% of read</th><th>words</th></tr>"
                   + "".join(rows) + "</table>" + "".join(details))
    return "".join(out) or "<p>Nothing was dropped.</p>"


def _histogram(w: dict[str, Any]) -> tuple[str, float]:
    bins = len(w["docs"])
    bin_w = HIST_WIDTH / bins
    top = max(max(w["docs"]), 1)
    rects = []
    edges = w["edges"]
    for i, count in enumerate(w["docs"]):
        lo = "−∞" if i == 0 else f"{edges[i - 1]:.4g}"
        hi = "+∞" if i == len(edges) else f"{edges[i]:.4g}"
        h = (HIST_HEIGHT - 14) * (count / top) ** 0.5 if count else 0
        rects.append(f'<rect class="bin" data-bin="{i}" x="{i * bin_w:.2f}" '
                     f'y="{HIST_HEIGHT - 14 - h:.1f}" width="{max(bin_w - 0.5, 0.5):.2f}" '
                     f'height="{h:.1f}"><title>{lo} … {hi}: {count} documents, {w["words"][i]} '
                     "words</title></rect>")
    x_now = (w["threshold_index"] + 1) * bin_w
    labels = (f'<text x="0" y="{HIST_HEIGHT - 1}">{edges[0]:.4g}</text>'
              f'<text x="{HIST_WIDTH}" y="{HIST_HEIGHT - 1}" text-anchor="end">'
              f"{edges[-1]:.4g}</text>"
              + (f'<text x="{x_now:.1f}" y="{HIST_HEIGHT - 1}" text-anchor="middle">'
                 f"{w['threshold']:.4g}</text>" if 40 < x_now < HIST_WIDTH - 40 else ""))
    svg = (f'<svg width="{HIST_WIDTH}" height="{HIST_HEIGHT}" role="img" aria-label="histogram">'
           + "".join(rects)
           + f'<line class="now" x1="{x_now:.2f}" x2="{x_now:.2f}" y1="0" '
             f'y2="{HIST_HEIGHT - 14}"></line>'
           + f'<line class="new" x1="{x_now:.2f}" x2="{x_now:.2f}" y1="0" '
             f'y2="{HIST_HEIGHT - 14}"></line>' + labels + "</svg>")
    return svg, bin_w


def _whatifs(data: dict[str, Any]) -> str:
    if not data["whatif"]:
        return "<p>No thresholded filter was enabled in this run.</p>"
    out = []
    stage = None
    for index, w in enumerate(data["whatif"]):
        if w["stage"] != stage:
            stage = w["stage"]
            out.append(f"<h3>{_e(stage)}</h3>")
        svg, bin_w = _histogram(w)
        sign = {"min": "≥", "max": "≤", "above": ">", "below": "<"}[w["direction"]]
        lang = w.get("language")
        notes = [f"{_n(w['eligible'])} documents counted"
                 + (f" (language {_e(lang)})" if lang else "")]
        if w.get("fixed_docs"):
            notes.append(f"{_n(w['fixed_docs'])} documents judged by another threshold (other "
                         "languages' settings) pass it and count as kept")
        if w["other_checks_failed"]:
            notes.append(f"{_n(w['other_checks_failed'])} dropped at this stage are not counted: "
                         "they fail another of its checks (or lack one of its metrics)")
        if w["missing"]:
            notes.append(f"{_n(w['missing'])} lack the metric and are not counted")
        out.append(
            f'<div class="card whatif" id="whatif-{_e(w["stage"])}-{_e(w["config_key"])}'
            f'{"-" + _e(lang) if lang else ""}" '
            f'data-index="{index}" data-bin-width="{bin_w!r}" data-metric="{_e(w["metric"])}" '
            f'data-config-key="{_e(w["config_key"])}" data-stage="{_e(w["stage"])}">'
            f'<b>{"languages." + _e(lang) + "." if lang else ""}{_e(w["stage"])}.'
            f'{_e(w["config_key"])}</b> — keep when '
            f'<code>{_e(w["metric"])}</code> {_e(sign)} threshold (reason <code>{_e(w["reason"])}'
            f"</code>); run's value {w['threshold']:.6g}"
            f"{svg}<div class=\"controls\"><label>threshold <input type=\"range\" min=\"0\" "
            f'max="{len(w["edges"]) - 1}" step="1" value="{w["threshold_index"]}"></label>'
            f'<input type="number" step="any" value="{w["threshold"]!r}" aria-label="threshold">'
            f'<button type="button" class="reset">reset</button>'
            f'<span>kept: <span class="num kept-docs" data-value="{w["kept_now"]}">'
            f'{_n(w["kept_now"])}</span> documents, <span class="num kept-words" '
            f'data-value="{w["kept_words_now"]}">{_n(w["kept_words_now"])}</span> words</span>'
            f'<span class="small kept-delta"></span></div>'
            f'<div class="small">{"; ".join(notes)}.</div></div>')
    return "".join(out)


def _bucket(sizes: dict[int, int]) -> list[tuple[str, int]]:
    """Counts by size, in power-of-two buckets above 4."""
    out: dict[str, int] = {}
    for size, count in sorted(sizes.items()):
        if size <= 4:
            key = str(size)
        else:
            lo = 1 << (int(size) - 1).bit_length() - 1
            key = f"{lo + 1}–{lo * 2}"
        out[key] = out.get(key, 0) + count
    return list(out.items())


def _languages(data: dict[str, Any]) -> str:
    kept = data["languages"]["kept"]
    total = sum(kept.values())
    top = max(kept.values(), default=1)
    rows = "".join(
        f'<tr><td class="l">{_e(lang or "(none)")}</td><td>{_n(n)}</td><td>{_pct(n, total)}</td>'
        f'<td>{_n(data["languages"]["kept_words"].get(lang, 0))}</td><td class="l">'
        f'<span class="bar" style="width:{200 * n / top:.0f}px"></span></td></tr>'
        for lang, n in list(kept.items())[:60])
    rejected = ", ".join(f"{_e(lang or '(none)')} {_n(n)}"
                         for lang, n in data["languages"]["rejected"].items())
    return ('<table><tr><th class="l">language</th><th>kept documents</th><th>share</th>'
            '<th>words</th><th class="l"></th></tr>' + rows + "</table>"
            + (f"<p>Dropped by the language stage, by detected language: {rejected}.</p>"
               if rejected else ""))


def _dedup(data: dict[str, Any]) -> str:
    stats, d = data["stats"], data["dedup"]
    out = []
    fuzzy = stats["stages"].get(FUZZY_DEDUP.name)
    if fuzzy is not None:
        removed = sum(fuzzy["rejected"].values())
        rows = "".join(f'<tr><td class="l">{_e(k)}</td><td>{_n(v)}</td></tr>'
                       for k, v in _bucket(d["cluster_sizes"]))
        out.append(f"<h3>Fuzzy (MinHash)</h3><p>{_n(removed)} documents removed from "
                   f"{_n(d['clusters'])} clusters; each kept document records the size of the "
                   "cluster it survived in <code>fuzzy_dedup.cluster_size</code>.</p>"
                   + ('<table><tr><th class="l">cluster size (with the kept document)</th>'
                      f"<th>clusters</th></tr>{rows}</table>" if rows else ""))
    exact = stats["stages"].get(EXACT_DEDUP.name)
    if exact is not None:
        s = d["spans"]
        rows = "".join(f'<tr><td class="l">{_e(k)}</td><td>{_n(v)}</td></tr>'
                       for k, v in _bucket(d["span_tokens"]))
        out.append(f"<h3>Exact substrings</h3><p>{_n(s['spans'])} spans cut from "
                   f"{_n(s['documents'])} kept documents ({_n(s['chars'])} characters); "
                   f"{_n(sum(exact['rejected'].values()))} documents dropped as too short.</p>"
                   + ('<table><tr><th class="l">span tokens</th><th>spans</th></tr>'
                      f"{rows}</table>" if rows else "")
                   + "".join(_example(ex, "cut") for ex in d["span_examples"]))
    urls = stats["stages"].get(URL_DEDUP.name)
    if urls is not None:
        reasons = ", ".join(f"{_e(r)} {_n(n)}" for r, n in urls["rejected"].items()) or "none"
        out.append(f"<h3>URLs</h3><p>{_n(urls['in'])} in, {_n(urls['out'])} kept; removed: "
                   f"{reasons}.</p>")
    return "".join(out) or "<p>Dedup was not enabled.</p>"


def _inputs(data: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr class="{"" if r["ok"] and r["complete"] else "alarm"}"><td class="l">'
        f'{_e(r["input"])}</td><td>{_n(r["read"])}</td><td>{_n(r["kept"])}</td>'
        f'<td>{_n(r["rejected"])}</td><td>{_n(r["kept_rows"])}</td><td>{_n(r["rejected_rows"])}'
        f'</td><td>{_e(r["units_done"])}/{_e(r["units"])}</td>'
        f'<td class="l">{"OK" if r["ok"] else "MISMATCH"}</td></tr>' for r in data["files"])
    sizes = {i["path"]: i.get("size") for i in data["manifest"].get("inputs", [])}
    total = sum(v for v in sizes.values() if v)
    warnings = data["stats"].get("warnings", [])
    listed = "".join(f"<li>{_e(w)}</li>" for w in warnings[:50])
    more = f"<li>… and {len(warnings) - 50:,} more</li>" if len(warnings) > 50 else ""
    return ('<table id="inputs"><tr><th class="l">input</th><th>read</th><th>kept</th>'
            "<th>rejected</th><th>rows in data/</th><th>rows in rejected/</th><th>units</th>"
            f'<th class="l">check</th></tr>{rows}</table><p class="small">{len(sizes)} inputs, '
            f"{total / 1e6:,.1f} MB.</p>"
            + (f"<details><summary>{len(warnings):,} record warnings (all in rejected/)"
               f"</summary><ul class=\"small\">{listed}{more}</ul></details>" if warnings else ""))


def _config(manifest: dict[str, Any]) -> str:
    config = json.dumps(manifest.get("config", {}), indent=1, sort_keys=True)
    versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in manifest.get("versions", {}).items())
    command = " ".join(manifest.get("command", []))
    return (f"<p>Config hash <code id=\"config-hash\">{_e(manifest.get('config_hash', ''))}"
            f"</code>; status {_e(manifest.get('status', '?'))}; {versions}.</p>"
            f'<p class="small">Command: <code>{_e(command)}</code></p>'
            f"<details><summary>resolved config</summary><pre class=\"doc\">{_e(config)}</pre>"
            "</details>")


NOTES = """<ul>
<li>Documents: from stats.json (merged from the per-unit statistics files, so a resumed run
counts every input). Words: whitespace words of the final text for kept documents; for a dropped
document, of its text when it was dropped, exact when the stored text is whole, else the quality
filter's word count, else scaled from the stored prefix. Words are counted from extraction on.</li>
<li>What-if: for a check of stage S and a threshold t, the counts are of the documents that
reached S, pass every other check of S at the run's thresholds and were not dropped by a later
stage; kept(t) is those whose metric passes t. Documents dropped at S are assumed to pass the
later stages (they never ran there: an upper bound when loosening; tightening is exact). At
the run's threshold it equals the run's kept count. The control moves over bin edges, where the
counts are exact; the URL filter's soft-word count is not offered (a later URL check stores no
metric).</li>
<li>Examples are a seeded uniform sample per stage and reason; texts of dropped documents were
cut to the run's <code>output.rejected_text_chars</code> when stored; highlights are recomputed
on the shown text with the run's config.</li></ul>"""


def render(data: dict[str, Any]) -> str:
    stats, manifest = data["stats"], data["manifest"]
    asset = files("refine.report")
    css = asset.joinpath("page.css").read_text()
    js = asset.joinpath("page.js").read_text()
    payload = {"whatif": data["whatif"], "funnel": data["funnel"],
               "documents": stats["documents"], "accounting_ok": stats.get("accounting_ok")}
    name = manifest.get("config", {}).get("name", "")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        ("funnel-section", "Documents and words after each stage", _funnel(data)),
        ("reasons", "Removed, by stage and reason", _reasons(data)),
        ("whatif", "What if a threshold changed", _whatifs(data)),
        ("kept", "Kept documents (sample)",
         "".join(_example(ex) for ex in data["kept_examples"]) or "<p>None kept.</p>"),
        ("languages", "Languages", _languages(data)),
        ("dedup", "Deduplication", _dedup(data)),
        ("throughput", "Throughput and CPU per stage", _stages(stats)),
        ("inputs-section", "Inputs and the accounting check", _inputs(data)),
        ("config", "Config", _config(manifest)),
        ("notes", "How the numbers are computed", NOTES),
    ]
    if data.get("ablation"):
        sections.insert(1, ("ablation", "Data-quality ablation: bits per byte of small models "
                            "trained on each variant", html_section(data["ablation"])))
    body = "".join(f'<section id="{sid}"><h2>{_e(title)}</h2>{html}</section>'
                   for sid, title, html in sections)
    docs = stats["documents"]
    config = manifest.get("config", {})
    checks = "; ".join(f"{stage} ({len(c)} checks)" for stage, c in STAGE_THRESHOLDS.items()
                       if stage not in OPTIONAL_STAGES or config.get(stage, {}).get("enabled"))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        f"<title>refine report: {_e(data['run'])}</title><style>{css}</style></head><body><main>"
        f"<h1>refine report: {_e(name)}</h1><div class=\"meta\">{_e(data['run'])} · config "
        f"{_e(manifest.get('config_hash', ''))} · {_n(docs['read'])} read, {_n(docs['kept'])} "
        f"kept ({_pct(docs['kept'], docs['read'])}), {_n(docs['rejected'])} rejected · "
        f"generated {now}</div>{_alarms(data)}{body}"
        f'<p class="small">What-if stages: {_e(checks)}.</p></main>'
        f'<script type="application/json" id="report-data">{script_json(payload)}</script>'
        f"<script>{js}</script></body></html>\n"
    )
