"""What the per-language threshold tests share: real German and English pages, and settings
that let both languages through."""

from __future__ import annotations

from .conftest import DATA

# Real German prose (a local news item), written for this test: three paragraphs, 118 words,
# none of Gopher's English stop words (the, be, to, of, and, that, have, with).
GERMAN = (
    "Die Stadtverwaltung hat am Dienstag beschlossen, im kommenden Frühjahr mit dem Bau der "
    "neuen Grundschule im Norden der Stadt zu beginnen. Nach Angaben des Bürgermeisters sollen "
    "die Arbeiten etwa zwei Jahre dauern und rund zwölf Millionen Euro kosten.\n"
    "Die Eltern im Viertel hatten lange auf diese Entscheidung gewartet, weil die bisherige "
    "Schule seit Jahren zu klein ist. Viele Kinder müssen derzeit mit dem Bus in die "
    "Nachbargemeinde fahren, was für die Familien mit erheblichem Aufwand verbunden ist.\n"
    "Außerdem will die Stadt die Straßen rund um das Gelände erneuern und einen sicheren Radweg "
    "anlegen. Die Anwohner können sich bei einer Informationsveranstaltung im Rathaus über die "
    "Pläne informieren und ihre Fragen an die Verwaltung richten."
)
GERMAN_STOP_WORDS = ["der", "die", "das", "und", "zu", "den", "von", "mit"]
NEWS = DATA / "text" / "lee-news-background.txt"
DEDUP_OFF = {stage: {"enabled": False} for stage in ("fuzzy", "exact", "urls")}
# Both languages through language ID (a multilingual run must let several through).
BASE = {"language": {"languages": ["en", "de"]}}


def english() -> str:
    """Real English news text: the first paragraphs of the Lee background corpus, ~150 words."""
    lines = [line for line in NEWS.read_text().splitlines() if len(line.split()) > 20]
    return "\n".join(lines[:2])


def with_de(overrides: dict, top: dict | None = None) -> dict:
    return {**BASE, **(top or {}), "languages": {"de": overrides}}
