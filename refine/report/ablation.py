"""The data-quality ablation's results (DIR/ablation.json of `python -m pretrain.ablate`) as a
markdown table, an SVG plot and a report section. Pure formatting: no torch, no files but the
JSON."""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

ABLATION_FILE = "ablation.json"
EVAL_LABELS = {"curated": "curated (Wikipedia + news)", "heldout": "held-out refined"}


def find_ablation(run_dir: Path | None, explicit: Path | None = None) -> Path | None:
    """DIR/ablation.json: `explicit` (a directory or the file), else RUN/ or RUN's parent."""
    if explicit is not None:
        candidates = [explicit]
    else:
        candidates = [run_dir, run_dir.parent] if run_dir is not None else []
    for candidate in candidates:
        path = candidate if candidate.suffix == ".json" else candidate / ABLATION_FILE
        if path.is_file():
            return path
    return None


def load_ablation(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def variant_names(result: dict[str, Any]) -> list[str]:
    """Variants in the ablation's order (raw, filtered, refined); JSON keys may be sorted."""
    order = result.get("variant_order") or []
    return [v for v in order if v in result["variants"]] + sorted(
        v for v in result["variants"] if v not in order)


def eval_names(result: dict[str, Any]) -> list[str]:
    order = result.get("eval_order") or []
    return [s for s in order if s in result["eval_sets"]] + sorted(
        s for s in result["eval_sets"] if s not in order)


def summarize(values: list[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    return {"n": len(values), "mean": mean, "min": min(values), "max": max(values),
            "spread": max(values) - min(values)}


def _cell(summary: dict[str, float]) -> str:
    return f"{summary['mean']:.4f} ± {summary['spread'] / 2:.4f}"


def markdown_table(result: dict[str, Any]) -> str:
    sets = eval_names(result)
    head = ["variant", "train docs", "train tokens", "epochs",
            *[f"{EVAL_LABELS.get(s, s)} bpb" for s in sets]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in variant_names(result):
        variant = result["variants"][name]
        tokens = sorted({r["train_tokens"] for r in variant["runs"]})
        cells = [name, f"{variant['train_documents']:,}",
                 " / ".join(f"{t:,}" for t in tokens), f"{variant['epochs']:.2f}",
                 *[_cell(variant["summary"][s]) for s in sets]]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({r["seed"] for v in result["variants"].values() for r in v["runs"]})
    eval_sets = "; ".join(f"{EVAL_LABELS.get(s, s)}: {e['documents']:,} documents, "
                          f"{e['bytes']:,} bytes, sha256 {e['sha256'][:12]}"
                          for s in sets for e in [result["eval_sets"][s]])
    notes = [
        "",
        f"Bits per byte (lower is better): mean over seeds {seeds} ± half the range (every seed "
        "lies within). Same tokenizer, model, schedule, seeds and number of training tokens "
        "for every variant.",
        f"Evaluated on: {eval_sets}.",
    ]
    return "\n".join(lines + notes) + "\n"


def svg_plot(result: dict[str, Any]) -> str:
    """One panel per evaluation set: a dot per seed and a bar at the mean, per variant."""
    sets, variants = eval_names(result), variant_names(result)
    panel_w, height, top, bottom, left = 300, 260, 30, 50, 60
    width = left + panel_w * len(sets) + 20
    colors = ["#c0504d", "#e0a030", "#4a7bd0", "#5a9a5a", "#8064a2"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             '<rect width="100%" height="100%" fill="white"/>']
    plot_h = height - top - bottom
    for p, eval_set in enumerate(sets):
        values = [r["eval"][eval_set]["bpb"] for v in variants
                  for r in result["variants"][v]["runs"]]
        low, high = min(values), max(values)
        pad = max((high - low) * 0.15, 1e-3)
        low, high = low - pad, high + pad
        x0 = left + p * panel_w

        def y(value: float, low: float = low, high: float = high) -> float:
            return top + plot_h * (high - value) / (high - low)

        label = escape(EVAL_LABELS.get(eval_set, eval_set))
        parts.append(f'<text x="{x0 + panel_w / 2:.1f}" y="18" text-anchor="middle" '
                     f'font-weight="bold">{label}</text>')
        parts.append(f'<line x1="{x0}" y1="{top}" x2="{x0}" y2="{top + plot_h}" '
                     'stroke="#444"/>')
        for k in range(5):
            value = low + (high - low) * k / 4
            parts.append(f'<line x1="{x0 - 4}" y1="{y(value):.1f}" x2="{x0 + panel_w - 30}" '
                         f'y2="{y(value):.1f}" stroke="#ddd"/>'
                         f'<text x="{x0 - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
                         f"{value:.3f}</text>")
        step = (panel_w - 40) / len(variants)
        for i, name in enumerate(variants):
            cx = x0 + step * (i + 0.5)
            color = colors[i % len(colors)]
            runs = result["variants"][name]["runs"]
            mean = result["variants"][name]["summary"][eval_set]["mean"]
            parts.append(f'<line x1="{cx - 18:.1f}" y1="{y(mean):.1f}" x2="{cx + 18:.1f}" '
                         f'y2="{y(mean):.1f}" stroke="{color}" stroke-width="3">'
                         f"<title>{escape(name)} mean {mean:.4f}</title></line>")
            for j, run in enumerate(runs):
                dx = (j - (len(runs) - 1) / 2) * 8
                value = run["eval"][eval_set]["bpb"]
                parts.append(f'<circle cx="{cx + dx:.1f}" cy="{y(value):.1f}" r="3.5" '
                             f'fill="none" stroke="{color}" stroke-width="1.5"><title>'
                             f'{escape(name)} seed {run["seed"]}: {value:.4f}</title></circle>')
            parts.append(f'<text x="{cx:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                         f"{escape(name)}</text>")
    parts.append(f'<text x="14" y="{top + plot_h / 2:.1f}" transform="rotate(-90 14 '
                 f'{top + plot_h / 2:.1f})" text-anchor="middle">bits per byte (lower is '
                 "better)</text>")
    parts.append(f'<text x="{left}" y="{height - 10}">dots: one model per seed; bar: mean. '
                 "Same tokenizer, model, seeds and training tokens per variant.</text>")
    parts.append("</svg>")
    return "".join(parts)


def _seed_values(variant: dict[str, Any], eval_set: str) -> str:
    return ", ".join(f"{run['eval'][eval_set]['bpb']:.4f}" for run in variant["runs"])


def html_section(result: dict[str, Any]) -> str:
    """The report's ablation section: table, plot, what was held equal."""
    sets = eval_names(result)
    head = "".join(f"<th>{escape(EVAL_LABELS.get(s, s))} bpb</th>" for s in sets)
    rows = []
    for name in variant_names(result):
        variant = result["variants"][name]
        tokens = " / ".join(f"{t:,}" for t in sorted({r["train_tokens"]
                                                      for r in variant["runs"]}))
        cells = "".join(
            f'<td class="num" title="seeds: {escape(_seed_values(variant, s))}">'
            f"{escape(_cell(variant['summary'][s]))}</td>" for s in sets)
        rows.append(f"<tr><td>{escape(name)}</td><td class=\"num\">"
                    f"{variant['train_documents']:,}</td><td class=\"num\">{tokens}</td>"
                    f"<td class=\"num\">{variant['epochs']:.2f}</td>{cells}</tr>")
    evals = "".join(f"<li>{escape(EVAL_LABELS.get(s, s))}: {e['documents']:,} documents, "
                    f"{e['bytes']:,} bytes (sha256 {escape(e['sha256'][:16])})</li>"
                    for s in sets for e in [result["eval_sets"][s]])
    budget = result.get("budget", {})
    finite = all(math.isfinite(r["eval"][s]["bpb"]) for v in result["variants"].values()
                 for r in v["runs"] for s in sets)
    return (f'<div id="ablation-table"><table><tr><th>variant</th><th>train docs</th>'
            f"<th>train tokens</th><th>epochs</th>{head}</tr>{''.join(rows)}</table>"
            f"{svg_plot(result) if finite else ''}"
            f"<p class=\"small\">Mode {escape(str(result.get('mode', '')))}; "
            f"{budget.get('steps', '–')} steps of {budget.get('tokens_per_step', '–')} tokens "
            f"per model; bits per byte, mean ± half the range over seeds. Evaluated on:</p>"
            f"<ul class=\"small\">{evals}</ul></div>")
