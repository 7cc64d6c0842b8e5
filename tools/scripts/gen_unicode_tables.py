#!/usr/bin/env python3
"""Generate runtime/src/tokenizer/tables.rs: the Unicode tables of the BERT basic tokenizer.

Usage: gen_unicode_tables.py [OUT.rs]   (default: runtime/src/tokenizer/tables.rs)
Needs: the `tokenizers` package from PyPI (the reference implementation), Python's `unicodedata`.

The runtime must reproduce the ids of HF `tokenizers` (BertNormalizer + BertPreTokenizer).
That implementation answers "is this a control char / a punctuation char / a nonspacing mark"
with older Unicode tables than Python's `unicodedata` (and HF has one CJK range that differs
from Google BERT's `_is_chinese_char`). So every table is computed twice: from `unicodedata`
(the definition) and by asking the reference for every code point; the reference wins and the
differences are printed, so a regeneration with a newer `tokenizers` shows what moved.

Tables written:
  REMOVED     clean_text deletes the char (Cc/Cf/Co except \\t \\n \\r, plus U+0000, U+FFFD)
  CJK         handle_chinese_chars puts spaces around the char
  PUNCT       BertPreTokenizer isolates the char (ASCII punctuation or Unicode P*)
  STRIP_DROP  accent stripping (NFD, then drop Mn) deletes the char
  STRIP_MAP   accent stripping replaces the char by another non-empty string
Hangul syllables (NFD is algorithmic) are left to code. Whitespace is Rust's
`char::is_whitespace` in both implementations and is only checked here; lowercasing is Rust's
`char::to_lowercase` in both.
"""

import os
import sys
import unicodedata

import tokenizers
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3
# Unicode White_Space, which Rust's char::is_whitespace implements.
WHITE_SPACE = set(
    list(range(0x09, 0x0E)) + [0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B))
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)


def code_points():
    for cp in range(0x110000):
        if not 0xD800 <= cp <= 0xDFFF:
            yield cp


def ranges(cps):
    """Merges sorted code points into inclusive ranges (a run may jump the surrogate gap)."""
    out = []
    for cp in sorted(cps):
        if out and (cp == out[-1][1] + 1 or (out[-1][1] == 0xD7FF and cp == 0xE000)):
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return out


def hangul_nfd(cp):
    s = cp - HANGUL_FIRST
    out = [0x1100 + s // 588, 0x1161 + (s % 588) // 28]
    if s % 28:
        out.append(0x11A7 + s % 28)
    return "".join(map(chr, out))


def report(name, ours, theirs):
    only_ud = sorted(set(ours) - set(theirs))
    only_ref = sorted(set(theirs) - set(ours))
    print(f"{name}: {len(theirs)} code points; unicodedata-only {len(only_ud)}, reference-only {len(only_ref)}")
    for label, xs in (("  unicodedata-only", only_ud), ("  reference-only", only_ref)):
        if xs:
            print(label, ", ".join(f"U+{x:04X}" for x in xs[:12]), "..." if len(xs) > 12 else "")


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "..", "runtime", "src", "tokenizer", "tables.rs")
    clean = BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    cjk = BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    strip = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    pre = BertPreTokenizer()

    removed, whitespace, chinese, punct, drop, strip_map = [], [], [], [], [], {}
    ud_removed, ud_chinese, ud_punct, ud_drop, ud_map = [], [], [], [], {}
    for cp in code_points():
        c = chr(cp)
        cat = unicodedata.category(c)

        r = clean.normalize_str(c)
        if r == "":
            removed.append(cp)
        elif r == " " and c != " ":
            whitespace.append(cp)
        elif r != c:
            raise SystemExit(f"clean_text changed U+{cp:04X} to {r!r}")
        if c not in "\t\n\r" and (cp in (0, 0xFFFD) or cat in ("Cc", "Cf", "Co")):
            ud_removed.append(cp)

        if cjk.normalize_str(c) == f" {c} ":
            chinese.append(cp)
        if (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
                or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
                or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F):
            ud_chinese.append(cp)

        parts = [p for p, _ in pre.pre_tokenize_str(f"a{c}b")]
        if parts == ["a", c, "b"]:
            punct.append(cp)
        elif parts != ["a", "b"] and parts != [f"a{c}b"]:
            raise SystemExit(f"pre-tokenizer split U+{cp:04X} as {parts!r}")
        if (parts == ["a", "b"]) != (cp in WHITE_SPACE):
            raise SystemExit(f"pre-tokenizer whitespace disagrees with White_Space at U+{cp:04X}")
        if cat.startswith("P") or (cp < 128 and not c.isalnum() and 33 <= cp <= 126):
            ud_punct.append(cp)

        s = strip.normalize_str(c)
        ud = "".join(x for x in unicodedata.normalize("NFD", c) if unicodedata.category(x) != "Mn")
        if HANGUL_FIRST <= cp <= HANGUL_LAST:
            if s != hangul_nfd(cp) or ud != s:
                raise SystemExit(f"Hangul U+{cp:04X} is not decomposed algorithmically")
        else:
            if s == "":
                drop.append(cp)
            elif s != c:
                strip_map[cp] = s
            if ud == "":
                ud_drop.append(cp)
            elif ud != c:
                ud_map[cp] = ud

    if set(whitespace) | {0x20} != WHITE_SPACE - set(removed):
        raise SystemExit("clean_text whitespace is not White_Space minus removed chars")
    punct_set = set(punct)
    for cp, s in strip_map.items():
        kinds = {ord(x) in punct_set for x in s}
        if len(kinds) > 1:
            print(f"note: U+{cp:04X} strips to a mix of punctuation and other chars: {s!r}")

    report("REMOVED", ud_removed, removed)
    report("CJK", ud_chinese, chinese)
    report("PUNCT", ud_punct, punct)
    report("STRIP_DROP", ud_drop, drop)
    report("STRIP_MAP", [k for k in ud_map], [k for k in strip_map])
    changed = [k for k in strip_map if k in ud_map and ud_map[k] != strip_map[k]]
    print(f"STRIP_MAP values that differ from unicodedata: {len(changed)}",
          ", ".join(f"U+{x:04X}" for x in changed[:12]))

    def emit_ranges(f, name, doc, cps):
        rs = ranges(cps)
        f.write(f"/// {doc}\n")
        f.write(f"pub(crate) static {name}: [(u32, u32); {len(rs)}] = [\n")
        line = "   "
        for a, b in rs:
            item = f" (0x{a:X}, 0x{b:X}),"
            if len(line) + len(item) > 99:
                f.write(line + "\n")
                line = "   "
            line += item
        f.write(line + "\n];\n\n")

    with open(out_path, "w", encoding="utf-8") as f:
        f.write(
            "// @generated by tools/scripts/gen_unicode_tables.py from the reference tokenizer\n"
            f"// (Python `tokenizers` {tokenizers.__version__}: BertNormalizer, BertPreTokenizer),\n"
            f"// cross-checked against Python `unicodedata` {unicodedata.unidata_version}. Do not edit.\n"
            "//! Unicode tables of the BERT basic tokenizer, as sorted inclusive code point ranges.\n\n")
        emit_ranges(f, "REMOVED", "Chars that text cleaning deletes (Cc, Cf, Co but `\\t \\n \\r`; U+0000; U+FFFD).", removed)
        emit_ranges(f, "CJK", "Chars that are split off as words of their own (CJK ideographs).", chinese)
        emit_ranges(f, "PUNCT", "Chars that the pre-tokenizer splits off (ASCII punctuation and Unicode P*).", punct)
        emit_ranges(f, "STRIP_DROP", "Chars that accent stripping (NFD, drop Mn) deletes.", drop)
        items = sorted(strip_map.items())
        f.write("/// Chars that accent stripping (NFD, drop Mn) replaces, sorted by code point; Hangul\n"
                "/// syllables are decomposed in code.\n")
        f.write(f"pub(crate) static STRIP_MAP: [(u32, &str); {len(items)}] = [\n")
        for cp, s in items:
            lit = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else f"\\u{{{ord(c):x}}}" for c in s)
            f.write(f"    (0x{cp:X}, \"{lit}\"),\n")
        f.write("];\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
