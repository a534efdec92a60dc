"""The `quality` step against datatrove: the same keep/drop decisions on the same documents.

Issue 19, item 4. A seeded generator writes documents of varied quality, planting each
failure mode of the Gopher quality, Gopher repetition, C4 and FineWeb filters at strengths
on both sides of its threshold (repeated lines, paragraphs and n-grams, short lines,
bullets, ellipses, missing stop words, hashes, numbers, long and short words, javascript,
lorem ipsum, curly brackets, policy lines, citations, missing punctuation) on top of
clean prose. Each of datatrove's four filters, with its default thresholds and its English
word tokenizer (spaCy's blank English, which ships in the spaCy wheel: no download), judges
every document; `weave run` judges the same file once per filter. The script prints, per
filter, how often the two agree on keeping a document, on the rule that drops it and (C4)
on the text it keeps. Then, on real English with code in it (the docstrings of Python's
standard library, about 1,000), it checks that both count the same words (Gopher's) and
the same C4 sentences. It exits non-zero when any of these agrees on fewer than 99%, or
when the corpus leaves a filter untested.

Usage: python quality_agreement.py WEAVE_BIN [--docs N] [--seed S] [--show K]
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

MIN_AGREEMENT = 0.99

# datatrove's reasons, by the rule names `quality` gives them.
RULES = {
    "gopher_short_doc": "min_doc_words",
    "gopher_long_doc": "max_doc_words",
    "gopher_below_avg_threshold": "min_avg_word_length",
    "gopher_above_avg_threshold": "max_avg_word_length",
    "gopher_too_many_hashes": "hash_ratio",
    "gopher_too_many_ellipsis": "ellipsis_ratio",
    "gopher_too_many_bullets": "bullet_lines_ratio",
    "gopher_too_many_end_ellipsis": "ellipsis_lines_ratio",
    "gopher_below_alpha_threshold": "alpha_words_ratio",
    "gopher_enough_stop_words": "min_stop_words",
    "too_few_sentences": "min_num_sentences",
}
for n in range(5, 11):
    RULES[f"duplicated_{n}_n_grams"] = f"dup_{n}_gram"

# ---------------------------------------------------------------------------------------
# The generator.

SUBJECTS = ["The council", "Our team", "The river", "A small town", "The new library", "Each student",
            "The old bridge", "My neighbour", "The company", "This recipe", "Dr. Smith", "The committee",
            "Mr. Jones", "The market", "Every visitor", "The museum", "Her brother", "The garden"]
VERBS = ["opened", "described", "changed", "improved", "visited", "announced", "explained", "built",
         "measured", "reviewed", "painted", "followed", "questioned", "supported", "discovered"]
OBJECTS = ["the plan for the harbour", "a report on the water supply", "the roof of the hall",
           "its annual budget", "the path along the coast", "a list of local events",
           "the history of the valley", "the results of the survey", "a map of the old quarter",
           "the rules for parking", "the schedule of the trains", "a guide to the forest"]
TAILS = ["after a long debate", "with great care", "in the spring of 2019", "before the storm",
         "for the first time", "to the surprise of many", "at the end of the year",
         "with help from volunteers", "on a quiet Sunday", "despite the rain", "e.g. in the north",
         "by 3.5% in a year", "in the U.S. and abroad", "as well-known critics said"]
EXTRA = ["It wasn't easy.", "They didn't mind.", "That's what we heard.", "We'll see what happens.",
         "Nobody knew why!", "Was it worth it?", "The answer, of course, was yes.",
         "Prices rose (slightly) again.", "\"It works,\" she said.", "I'm sure it can't last."]
SHORT = ["ox", "an", "it", "go", "up", "be", "to", "of", "do", "at", "is", "on", "so", "we", "by"]
LONG = ["internationalization", "characteristically", "disproportionately", "telecommunications",
        "counterrevolutionary", "incomprehensibility", "responsibilities", "electroencephalogram"]
NOSTOP = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
          "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango"]
MENU = ["Home", "About us", "Contact", "Login", "Search", "Menu", "Share this", "Next page",
        "Read more", "Categories", "Archive 2021", "Follow us"]


ADJ = ["old", "new", "quiet", "busy", "small", "large", "bright", "dark", "local", "famous", "narrow",
       "wide", "early", "late", "green", "broken", "modern", "ancient", "careful", "sudden", "northern",
       "southern", "rural", "urban", "frozen", "golden", "hidden", "public", "private", "simple"]
NOUN = ["council", "team", "river", "town", "library", "student", "bridge", "neighbour", "company",
        "recipe", "committee", "market", "visitor", "museum", "brother", "garden", "harbour", "report",
        "roof", "budget", "path", "coast", "valley", "survey", "map", "quarter", "train", "forest",
        "school", "farmer", "engine", "window", "letter", "festival", "village", "mountain", "island",
        "painter", "doctor", "teacher", "kitchen", "station", "road", "factory", "castle", "church"]
PREP = ["near", "behind", "beside", "across", "under", "over", "along", "beyond", "around", "without"]


def phrase(r):
    det = r.choice(["the", "a", "one", "every", "that", "this", "our", "their"])
    return f"{det} {r.choice(ADJ)} {r.choice(NOUN)}"


def sentence(r):
    subject = r.choice(SUBJECTS) if r.random() < 0.15 else phrase(r).capitalize()
    s = f"{subject} {r.choice(VERBS)} {phrase(r)} {r.choice(PREP)} {phrase(r)}"
    if r.random() < 0.3:
        s += f" {r.choice(TAILS)}"
    s += r.choice([".", ".", ".", "!", "?"])
    if r.random() < 0.2:
        s += " " + r.choice(EXTRA)
    return s


def prose_lines(r, n):
    return [" ".join(sentence(r) for _ in range(r.randint(1, 3))) for _ in range(n)]


def doc(r, i):
    """One document: prose with one to three planted failure modes at random strengths."""
    lines = prose_lines(r, r.randint(3, 14))
    modes = r.sample(MODES, r.randint(0, 3)) if i % 7 else []
    for mode in modes:
        lines = mode(r, lines)
    sep = "\n\n" if r.random() < 0.2 else "\n"
    text = sep.join(lines)
    if r.random() < 0.05:
        text = "\n" + text + "\n"
    return text


def m_repeat_lines(r, lines):
    k = r.randint(1, max(2, len(lines)))
    line = r.choice(lines)
    return lines + [line] * k


def m_repeat_paras(r, lines):
    para = "\n".join(lines[: r.randint(1, 3)])
    return lines + ["", para] * r.randint(1, 3)


def m_top_gram(r, lines):
    phrase = r.choice(["buy now", "click here", "best price", "free shipping today", "limited offer now"])
    k = r.randint(2, 25)
    return lines + [" ".join([phrase] * k) + "."]


def m_dup_grams(r, lines):
    words = " ".join(lines).split()
    n = r.randint(5, 14)
    start = r.randint(0, max(0, len(words) - n))
    span = " ".join(words[start : start + n])
    return lines + [f"{span} {span}" for _ in range(r.randint(1, 4))]


def m_short(r, lines):
    return lines[: r.randint(1, 3)]


def m_short_words(r, lines):
    k = r.randint(10, 120)
    return lines + [" ".join(r.choice(SHORT) for _ in range(k)) + "."]


def m_long_words(r, lines):
    k = r.randint(10, 200)
    return lines + [" ".join(r.choice(LONG) for _ in range(k)) + "."]


def m_hashes(r, lines):
    k = r.randint(1, 40)
    return lines + [" ".join(f"#{r.choice(NOSTOP)}" for _ in range(k))]


def m_ellipses(r, lines):
    k = r.randint(1, 30)
    return [ln + (" ..." * (k // len(lines) + (1 if j < k % len(lines) else 0))) for j, ln in enumerate(lines)]


def m_bullets(r, lines):
    frac = r.uniform(0.6, 1.0)
    return [(r.choice(["- ", "• ", "  - "]) + ln) if r.random() < frac else ln for ln in lines]


def m_end_ellipsis(r, lines):
    frac = r.uniform(0.1, 0.6)
    return [(ln.rstrip(".") + r.choice(["...", "…", "..."])) if r.random() < frac else ln for ln in lines]


def m_numbers(r, lines):
    frac = r.uniform(0.1, 0.4)
    out = []
    for ln in lines:
        words = ln.split(" ")
        words = [str(r.randint(0, 9999)) if r.random() < frac else w for w in words]
        out.append(" ".join(words))
    return out


def m_no_stop(r, lines):
    keep = r.choice([[], ["the"], ["of"], ["and", "the"]])
    stop = {"the", "be", "to", "of", "and", "that", "have", "with"} - set(keep)
    return [" ".join(w for w in ln.split(" ") if w.lower() not in stop) for ln in lines]


def m_nostop_words(r, lines):
    k = r.randint(40, 120)
    return [" ".join(r.choice(NOSTOP) for _ in range(k)) + "."] + lines[: r.randint(0, 1)]


def m_menu(r, lines):
    k = r.randint(1, 30)
    out = list(lines)
    for _ in range(k):
        out.insert(r.randint(0, len(out)), r.choice(MENU))
    return out


def m_javascript(r, lines):
    js = r.choice(["Please enable JavaScript to view this page.", "This site needs javascript to run.",
                   "Javascript is disabled in your browser!"])
    return lines + [js] * r.randint(1, 3)


def m_lorem(r, lines):
    lorem = r.choice(["Lorem ipsum dolor sit amet, consectetur adipiscing elit.", "lorem ipsum dolor sit amet",
                      "Sed ut lorem ipsum dolor."])
    out = list(lines)
    out.insert(r.randint(0, len(out)), lorem)
    return out


def m_curly(r, lines):
    code = r.choice(["function f() { return 1; }", "The set {a, b} is small.", "Use {name} as a placeholder."])
    out = list(lines)
    out.insert(r.randint(0, len(out)), code)
    return out


def m_policy(r, lines):
    pol = r.choice(["This site uses cookies to improve your experience.", "Read our privacy policy here.",
                    "By continuing you accept the terms of use.", "We use cookies for ads."])
    return lines + [pol] * r.randint(1, 3)


def m_citations(r, lines):
    return [ln + r.choice(["[1]", " [2]", "[edit]", "[citation needed]", ""]) for ln in lines]


def m_no_punct(r, lines):
    frac = r.uniform(0.3, 1.0)
    return [ln.rstrip(".!?\"") if r.random() < frac else ln for ln in lines]


def m_few_sentences(r, lines):
    return [" ".join(sentence(r)[:-1] + "." for _ in range(r.randint(1, 2))) for _ in range(r.randint(1, 4))]


def m_short_lines(r, lines):
    frac = r.uniform(0.4, 0.9)
    out = []
    for ln in lines:
        if r.random() < frac:
            out.extend(w + "." for w in ln.split(". ")[:2])
        else:
            out.append(ln)
    return out


def m_list(r, lines):
    k = r.randint(5, 40)
    return lines + [f"{r.choice(NOSTOP)} {r.randint(1, 99)}." for _ in range(k)]


def m_list_of_long_words(r, lines):
    # Few words a line, but lines long enough not to be short and none repeated: line
    # breaks per word, with a blank line after some.
    k = r.randint(8, 30)
    blank = r.uniform(0, 0.6)
    out = [f"{r.choice(LONG)} {r.choice(LONG)} {r.randint(1, 10**6)}." + ("\n" if r.random() < blank else "")
           for _ in range(k)]
    return out + lines[: r.randint(0, 2)]


def m_long_word(r, lines):
    return lines + ["x" * r.choice([999, 1000, 1001, 1500]) + " is a very long word."]


def m_abbrev(r, lines):
    return lines + [r.choice(["Mr. Brown met Dr. Green at 5 p.m. yesterday.", "See e.g. the U.S. report, i.e. the 2nd one.",
                              "It rained. Then it stopped. Then it rained again.", "Wait... what? Really?! Yes."])]


WEB = ["Copyright © 2021 Example Ltd. All rights reserved.", "Price: $19.99 (was $24.50) – save 20%!",
       "Follow @weave_news and #opendata for updates.", "Email us at info@example.com or call 555-0100.",
       "“Smart quotes” and ‘single ones’ — with an em dash… and more.", "C++ and C# devs: see https://example.com/docs?id=7.",
       "Rated 4.5/5 by 1,024 users :) <3", "Café, naïve, résumé, façade — Unicode words.", ">> Next | Prev <<",
       "It's 10am–5pm, Mon.–Fri. (closed on hols.)", "The U.S.-based firm's CEO didn't comment.",
       "Q&A: what's new in v2.0.1?", "Temperatures hit 35°C in the south-east, ca. 95°F.",
       "Don't miss it -- really!!!", "[Photo: J. Doe / Reuters]", "Tel. +44 (0)20 7946 0958 ext. 12"]


def m_web_noise(r, lines):
    out = list(lines)
    for _ in range(r.randint(1, 6)):
        out.insert(r.randint(0, len(out)), r.choice(WEB))
    return out


def m_inline_noise(r, lines):
    return [ln + " " + r.choice(WEB) if r.random() < 0.5 else ln for ln in lines]


MODES = [m_repeat_lines, m_repeat_paras, m_top_gram, m_dup_grams, m_short, m_short_words, m_long_words,
         m_hashes, m_ellipses, m_bullets, m_end_ellipsis, m_numbers, m_no_stop, m_nostop_words, m_menu,
         m_javascript, m_lorem, m_curly, m_policy, m_citations, m_no_punct, m_few_sentences, m_short_lines,
         m_list, m_long_word, m_abbrev, m_web_noise, m_inline_noise,
         m_list_of_long_words]

# ---------------------------------------------------------------------------------------
# The comparison.

FILTERS = {
    "gopher_quality": GopherQualityFilter,
    "gopher_repetition": GopherRepetitionFilter,
    "c4": C4QualityFilter,
    "fineweb": FineWebQualityFilter,
}


def datatrove_verdicts(name, texts):
    """(kept, rule, text after) per document, by datatrove's filter `name` alone."""
    f = FILTERS[name]()
    out = []
    for i, t in enumerate(texts):
        d = Document(text=t, id=str(i))
        v = f.filter(d)
        if v is True:
            out.append((True, None, d.text))
        else:
            reason = v[1] if isinstance(v, tuple) else "?"
            out.append((False, RULES.get(reason, reason), None))
    return out


def weave_verdicts(weave, work, name, n):
    """(kept, rule, text after) per document, by `weave run` with the filter `name` alone."""
    d = work / name
    d.mkdir()
    (d / "p.toml").write_text(
        f"""[[step]]
id = "load"
kind = "load_jsonl"
path = "{work / 'docs.jsonl'}"

[[step]]
id = "quality"
kind = "quality"
filters = ["{name}"]
exclusions = "excluded.jsonl"

[[step]]
id = "export"
kind = "export_jsonl"
path = "kept.jsonl"
"""
    )
    run = subprocess.run([weave, "run", "p.toml", "--no-cache"], cwd=d, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"weave run failed for {name}:\n{run.stdout}\n{run.stderr}")
    out = [None] * n
    for line in (d / "kept.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["id"]] = (True, None, rec["text"])
    for line in (d / "excluded.jsonl").read_text().splitlines():
        ex = json.loads(line)
        rule = ex["reason"].split(": ", 1)[1].split(" ", 1)[0]
        out[ex["record"]["id"]] = (False, rule, None)
    missing = [i for i, v in enumerate(out) if v is None]
    if missing:
        sys.exit(f"weave lost documents {missing[:10]} for {name}")
    return out


def docstrings(limit=1000):
    """Real English with code in it: the docstrings of Python's standard library."""
    import importlib
    import inspect

    out = []
    for m in ["os", "re", "json", "collections", "argparse", "subprocess", "pathlib", "typing", "email",
              "http.client", "urllib.parse", "logging", "unittest", "asyncio", "datetime", "decimal", "statistics",
              "textwrap", "string", "csv", "sqlite3", "zipfile", "tarfile", "shutil", "inspect", "functools",
              "itertools", "random", "socket"]:
        for _, obj in inspect.getmembers(importlib.import_module(m)):
            d = inspect.getdoc(obj)
            if d and len(d) > 40:
                out.append(d)
    return list(dict.fromkeys(out))[:limit]


def counts_agree(weave, work, texts):
    """How often `quality` and datatrove count the same words (Gopher's, symbols left out)
    and the same C4 sentences in each text: the measures read out of the exclusion file,
    with thresholds no text can meet."""
    from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS
    from datatrove.utils.text import PUNCTUATION_SET, split_into_sentences, split_into_words

    d = work / "counts"
    d.mkdir()
    with open(d / "docs.jsonl", "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "text": t}) + "\n")
    measured = {}
    for name, table in [("gopher_quality", "{ min_doc_words = 100000000 }"),
                        ("c4", "{ min_num_sentences = 100000000, filter_lorem_ipsum = false, filter_curly_bracket = false }")]:
        (d / "p.toml").write_text(
            f'[[step]]\nid = "load"\nkind = "load_jsonl"\npath = "docs.jsonl"\n\n'
            f'[[step]]\nid = "quality"\nkind = "quality"\nfilters = ["{name}"]\n{name} = {table}\n'
            f'exclusions = "excluded.jsonl"\n\n[[step]]\nid = "export"\nkind = "export_jsonl"\npath = "kept.jsonl"\n'
        )
        run = subprocess.run([weave, "run", "p.toml", "--no-cache"], cwd=d, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"weave run failed:\n{run.stdout}\n{run.stderr}")
        for line in (d / "excluded.jsonl").read_text().splitlines():
            ex = json.loads(line)
            measured[(name, ex["record"]["id"])] = int(ex["reason"].split(" ")[2])

    def c4_sentences(text):
        n = 0
        for line in text.splitlines():
            line = line.strip()
            words = line.split()
            if any(len(w) > 1000 for w in words):
                continue
            line = CITATION_REGEX.sub("", line)
            if not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS) or len(words) < 3:
                continue
            low = line.lower()
            if "javascript" in low or any(p in low for p in POLICY_SUBSTRINGS):
                continue
            n += len(split_into_sentences(line))
        return n

    words_ok = sum(
        measured[("gopher_quality", i)] == sum(any(c not in PUNCTUATION_SET for c in w) for w in split_into_words(t))
        for i, t in enumerate(texts)
    )
    sentences_ok = sum(measured[("c4", i)] == c4_sentences(t) for i, t in enumerate(texts))
    return words_ok / len(texts), sentences_ok / len(texts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weave")
    ap.add_argument("--docs", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--show", type=int, default=3, help="disagreements to print per filter")
    args = ap.parse_args()
    args.weave = str(Path(args.weave).resolve())
    r = random.Random(args.seed)
    texts = [doc(r, i) for i in range(args.docs)]
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with open(work / "docs.jsonl", "w") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"id": i, "text": t}) + "\n")
        print(f"{args.docs} documents (seed {args.seed})")
        print(f"{'filter':<18} {'dropped (datatrove)':>20} {'dropped (weave)':>16} {'agreement':>10} {'same rule':>10} {'same text':>10}")
        for name in FILTERS:
            dt = datatrove_verdicts(name, texts)
            wv = weave_verdicts(args.weave, work, name, len(texts))
            agree = [a[0] == b[0] for a, b in zip(dt, wv)]
            both_dropped = [(a[1], b[1]) for a, b in zip(dt, wv) if not a[0] and not b[0]]
            both_kept = [(a[2], b[2]) for a, b in zip(dt, wv) if a[0] and b[0]]
            rate = sum(agree) / len(agree)
            same_rule = sum(a == b for a, b in both_dropped) / max(1, len(both_dropped))
            same_text = sum(a == b for a, b in both_kept) / max(1, len(both_kept))
            print(f"{name:<18} {sum(not v[0] for v in dt):>20} {sum(not v[0] for v in wv):>16} "
                  f"{rate:>9.2%} {same_rule:>10.2%} {same_text:>10.2%}")
            if rate < MIN_AGREEMENT:
                failed = True
            # The corpus must test the filter: some documents kept, some dropped, by
            # several of its rules.
            drop_share = sum(not v[0] for v in dt) / len(dt)
            rules = sorted({v[1] for v in dt if not v[0]})
            print(f"  {len(rules)} rules fired: {', '.join(rules)}")
            if not 0.05 <= drop_share <= 0.95 or len(rules) < 3:
                failed = True
                print(f"  the corpus does not test {name}: {drop_share:.0%} dropped, rules {rules}")
            shown = 0
            for i, (a, b) in enumerate(zip(dt, wv)):
                if (a[0] != b[0] or a[1] != b[1]) and shown < args.show:
                    shown += 1
                    print(f"  doc {i}: datatrove {'keeps' if a[0] else 'drops: ' + a[1]}, "
                          f"weave {'keeps' if b[0] else 'drops: ' + b[1]}: {texts[i][:300]!r}")
        texts = docstrings()
        words, sentences = counts_agree(args.weave, work, texts)
        print(f"{len(texts)} docstrings of Python's standard library: the same word count in {words:.2%}, "
              f"the same C4 sentence count in {sentences:.2%}")
        if min(words, sentences) < MIN_AGREEMENT:
            failed = True
    if failed:
        sys.exit(f"agreement below {MIN_AGREEMENT:.0%}, or a filter left untested")


if __name__ == "__main__":
    main()
