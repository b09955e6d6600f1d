import gzip
import random
import re
from pathlib import Path

import pytest
from lxml import html as lxml_html
from lxml.etree import XPath
from trafilatura.utils import load_html

from refine.extract import ExtractConfig, extract_text
from refine.readers import plan_units, read_unit
from refine.xpath_rewrite import (
    REGEXP_NS,
    required_literals,
    rewrite_xpath,
    rewritten_pairs,
    use_rewritten_xpaths,
)
from testkit.extract_eval import decode_html

DATA = Path(__file__).parent / "data"
NS = {"re": REGEXP_NS}


@pytest.fixture(scope="module")
def real_pages() -> list[str]:
    """140 real Common Crawl pages and the 10 gold article pages."""
    paths = sorted((DATA / "warc").glob("real-html-*.warc.gz"))
    units = plan_units([(str(p), p.stat().st_size) for p in paths], 1 << 40)
    pages = [r.html for u in units for r in read_unit(u, 1 << 30) if r.html]
    pages += [decode_html(gzip.decompress(p.read_bytes()))
              for p in sorted((DATA / "extraction" / "html").glob("*.html.gz"))]
    assert len(pages) >= 140
    return pages


@pytest.fixture(autouse=True)
def _originals_after_each_test():
    yield
    use_rewritten_xpaths(ExtractConfig().fast_xpaths)


def select(source: str, doc: str) -> list[str]:
    tree = lxml_html.fromstring(doc)
    return [f"{e.tag}#{e.get('id')}" for e in XPath(source, namespaces=NS)(tree)]


NESTED = """<html><body>
<div id="a" class="x"><p id="p1" class="x"></p><section id="s1" class="x"></section></div>
<section id="b"><div id="c" class="y"></div><div id="d" class="x"><div id="e" class="x"></div>
</div><aside id="f" class="x"></aside></section><p id="g" class="x"></p></body></html>"""


@pytest.mark.parametrize("source", [
    ".//*[self::div or self::section][@class='x']",
    "(.//*[self::div or self::section][@class='x'])[1]",
    ".//*[self::div or self::section][@class='x'][1]",  # first match per parent
    ".//*[self::div or self::aside][@class='x'][not(.//div)]/..",
    "//*[self::div or self::p][contains(@class, 'x') or @id='c']",
])
def test_union_of_names_selects_the_same_nodes(source):
    rewritten = rewrite_xpath(source)
    assert re.search(r"\((?:\.?//\w+\|)+\.?//\w+\)", rewritten), rewritten  # the union form
    assert select(rewritten, NESTED) == select(source, NESTED)
    assert select(source, NESTED)  # the cases select something


def test_brackets_inside_string_literals_are_text():
    assert (rewrite_xpath(".//*[self::p or self::div][@title='a][1]']")
            == "(.//p|.//div)[@title='a][1]']")


def test_first_match_per_parent_keeps_its_meaning():
    source = ".//*[self::div or self::section][@class='x'][1]"
    # d is the first x-classed div/section in its section, e the first in d; a and s1 in body/a
    assert select(source, NESTED) == ["div#a", "section#s1", "div#d", "div#e"]
    assert select(rewrite_xpath(source), NESTED) == select(source, NESTED)


@pytest.mark.parametrize("source", [
    ".//*[self::div or self::section][2]",
    ".//*[self::div][@class='x'][position() > 1]",
    ".//*[self::div][count(.//p)]",  # a number: positional
    ".//*[self::div][last()]",
    "p//*[self::div][@id]",  # not the start of a location path
    ".//*[self::div][exsl:node-set(@id)]",  # a prefix other than re:
    ".//*[re:test(@class, 'x?')]",  # matches the empty string, i.e. absent attributes
    '''.//p[@title="re:test(@a, 'x')"]''',  # inside a string literal
])
def test_unsafe_or_unknown_forms_are_left_alone(source):
    assert rewrite_xpath(source) == source


def test_regex_test_gets_a_guard_that_runs_in_c():
    rewritten = rewrite_xpath(".//p[re:test(@class, '^comment[s-]|article-comments')]")
    assert "contains(@class, 'comment')" in rewritten
    rewritten = rewrite_xpath(".//p[re:test(@id|@class, 'foo')]")
    assert "((contains(@id|@class, 'foo')) and re:test(@id|@class, 'foo'))" in rewritten
    # case-insensitive: no literal guard is sound, so the regex runs as before
    assert rewrite_xpath(".//p[re:test(@class, 'foo', 'i')]") == ".//p[re:test(@class, 'foo', 'i')]"


@pytest.mark.parametrize("pattern, literals", [
    ("mvp-post-add-(?:box|wrap)|infinite-?scroll", ["infinite", "mvp-post-add-"]),
    ("^(?:[Cc]omment(?!ary)|comol|dsq-comments)", ["comol", "omment"]),
    ("(^|\\s)bottom|bottom(\\s|$)", ["bottom"]),
    ("post[-_]?content|postContent", ["post"]),  # the parser factors out the common prefix
    ("post[-_]?content|blogContent", ["blogContent", "content"]),  # case-sensitive
    ("(?i)foo", None),
    ("(?i:foo)bar", ["bar"]),
    ("a|.*", None),
])
def test_required_literals(pattern, literals):
    found = required_literals(pattern)
    if literals is None:
        assert found is None
    else:
        assert found == sorted(literals)


def _all_re_test_patterns() -> list[str]:
    pairs = rewritten_pairs()
    return sorted({m.group(1) for _, old, _ in pairs
                   for m in re.finditer(r"re:test\([^,]+,\s*'([^']*)'\s*\)", old.path)})


def test_required_literals_are_sound_on_random_strings():
    """Every string a pattern matches contains one of its literals (random strings over each
    pattern's own characters, plus strings built from its literals with one character off)."""
    rng = random.Random(0)
    patterns = _all_re_test_patterns()
    assert len(patterns) >= 20
    checked = 0
    for pattern in patterns:
        literals = required_literals(pattern)
        if not literals:
            continue
        compiled = re.compile(pattern)
        alphabet = sorted(set(re.sub(r"[\\^$()?:|\[\]*+.!]", "", pattern)) | {" ", "-"})
        samples = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
                   for _ in range(300)]
        for lit in literals:
            for i in range(len(lit)):
                samples.append(lit[:i] + rng.choice(alphabet) + lit[i + 1:])
                samples.append("x " + lit[:i] + lit[i + 1:] + " y")
            samples.append(lit)
        for text in samples:
            if compiled.search(text):
                assert any(lit in text for lit in literals), (pattern, text)
                checked += 1
    assert checked > 100


def test_every_rewritten_trafilatura_expression_selects_the_same_nodes(real_pages):
    pairs = rewritten_pairs()
    names = {name.split("[")[0] for name, _, _ in pairs}
    assert {"BODY_XPATH", "OVERALL_DISCARD_XPATH", "RAW_TREE_PRUNE_XPATH",
            "REMOVE_COMMENTS_AND_LISTS_XPATH"} <= names
    selected = 0
    for page in real_pages:
        tree = load_html(page)  # the tree trafilatura parses
        for name, old, new in pairs:
            expected = old(tree)
            assert new(tree) == expected, name
            selected += len(expected) if isinstance(expected, list) else 0
    assert selected > 1000


def test_extraction_output_is_identical_with_rewritten_xpaths(real_pages):
    on, off = ExtractConfig(fast_xpaths=True), ExtractConfig(fast_xpaths=False)
    texts = 0
    for page in real_pages:
        fast = extract_text(page, on)
        assert fast == extract_text(page, off)
        texts += bool(fast)
    assert texts > 100


def test_switching_restores_trafilatura_own_expressions():
    from trafilatura import xpaths

    use_rewritten_xpaths(False)
    originals = list(xpaths.BODY_XPATH)
    use_rewritten_xpaths(True)
    assert originals != xpaths.BODY_XPATH and "preceding-sibling" in xpaths.BODY_XPATH[0].path
    use_rewritten_xpaths(False)
    assert originals == xpaths.BODY_XPATH


def test_trafilatura_xpath_lists_are_the_tested_ones():
    import trafilatura

    from refine.xpath_rewrite import TESTED_FINGERPRINT, expression_fingerprint

    assert expression_fingerprint() == TESTED_FINGERPRINT, (
        f"trafilatura {trafilatura.__version__} changed the XPath lists that refine.xpath_rewrite "
        "rewrites, so the rewrite is off (trafilatura's own expressions run). Run this file's "
        "equivalence tests with the rewrite forced on, then set TESTED_FINGERPRINT to "
        f"{expression_fingerprint()!r} in refine/xpath_rewrite.py.")
    assert rewritten_pairs(), "the tested lists must have expressions to rewrite"
