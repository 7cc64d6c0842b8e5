#!/usr/bin/env python3
"""Generate runtime/src/tokenizer/tables.rs: the Unicode tables of the BERT basic tokenizer.

Usage: gen_unicode_tables.py [OUT.rs]   (default: runtime/src/tokenizer/tables.rs)
Needs: the `tokenizers` package from PyPI (the reference implementation), Python's `unicodedata`.

The runtime must reproduce the ids of HF `tokenizers` (BertNormalizer + BertPreTokenizer).
That implementation answers "is this a control char / a punctuation char / a nonspacing mark /
what is its decomposition" with older Unicode tables than Python's `unicodedata`, and one of its
CJK ranges differs from Google BERT's `_is_chinese_char`. So every table is computed twice:
from `unicodedata` (the definition) and by asking the reference about every code point. The
reference wins; the differences are printed, so a regeneration shows what moved.

Tables written (sorted inclusive code point ranges unless said otherwise):
  REMOVED   clean_text deletes the char (Cc/Cf/Co except \\t \\n \\r, plus U+0000, U+FFFD)
  CJK       handle_chinese_chars puts spaces around the char
  PUNCT     BertPreTokenizer isolates the char (ASCII punctuation or Unicode P*)
  MN        accent stripping drops the char (general category Mn)
  CCC       (first, last, class): canonical combining class of the non-starters, for the
            canonical reordering step of NFD
  NFD       (char, decomposition): full canonical decomposition of every char that has one,
            except Hangul syllables (algorithmic, done in code)
Whitespace is Rust's `char::is_whitespace` in both implementations and is only checked here;
lowercasing is Rust's `char::to_lowercase` in both.
"""

import os
import sys
import unicodedata

import tokenizers
from tokenizers.normalizers import NFD, BertNormalizer
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


def ranges(cps, value=lambda cp: None):
    """Merges sorted code points with equal `value` into inclusive ranges (a run may jump the
    surrogate gap)."""
    out = []
    for cp in sorted(cps):
        if out and out[-1][2] == value(cp) and (
                cp == out[-1][1] + 1 or (out[-1][1] == 0xD7FF and cp == 0xE000)):
            out[-1][1] = cp
        else:
            out.append([cp, cp, value(cp)])
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
    nfd = NFD()
    pre = BertPreTokenizer()

    def nonstarter(c):
        """Whether the reference's NFD reorders `c` around U+0345 (class 240) or U+0334 (class 1)."""
        return (nfd.normalize_str("a\u0345" + c) == "a" + c + "\u0345"
                or nfd.normalize_str("a" + c + "\u0334") == "a\u0334" + c)

    removed, whitespace, chinese, punct, mn, ccc, decomp = [], [], [], [], [], {}, {}
    ud_removed, ud_chinese, ud_punct, ud_mn, ud_ccc, ud_decomp = [], [], [], [], {}, {}
    strip_ref = {}
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
        if cat.startswith("P") or (33 <= cp <= 126 and not c.isalnum()):
            ud_punct.append(cp)

        d = nfd.normalize_str(c)
        ud = unicodedata.normalize("NFD", c)
        s = strip.normalize_str(c)
        strip_ref[cp] = s
        if HANGUL_FIRST <= cp <= HANGUL_LAST:
            if d != hangul_nfd(cp) or ud != d:
                raise SystemExit(f"Hangul U+{cp:04X} is not decomposed algorithmically")
            continue
        if d != c:
            decomp[cp] = d
        if ud != c:
            ud_decomp[cp] = ud
        if d == c and s == "":
            mn.append(cp)
        if cat == "Mn":
            ud_mn.append(cp)
        k = unicodedata.combining(c)
        if k:
            ud_ccc[cp] = k
            if d == c and nonstarter(c):
                ccc[cp] = k

    if set(whitespace) | {0x20} != WHITE_SPACE - set(removed):
        raise SystemExit("clean_text whitespace is not White_Space minus removed chars")
    mn_set = set(mn)
    for cp, s in strip_ref.items():
        if HANGUL_FIRST <= cp <= HANGUL_LAST:
            continue
        model = "".join(x for x in decomp.get(cp, chr(cp)) if ord(x) not in mn_set)
        if model != s:
            raise SystemExit(f"NFD-then-drop-MN model gives {model!r} for U+{cp:04X}, reference {s!r}")
    anchors = {}
    for cp, k in ccc.items():
        anchors.setdefault(k, cp)
    for cp, k in ccc.items():
        for v, a in anchors.items():
            swapped = nfd.normalize_str("a" + chr(cp) + chr(a)) == "a" + chr(a) + chr(cp)
            if a != cp and swapped != (k > v):
                raise SystemExit(f"combining class {k} of U+{cp:04X} disagrees with the reference")

    report("REMOVED", ud_removed, removed)
    report("CJK", ud_chinese, chinese)
    report("PUNCT", ud_punct, punct)
    report("MN", ud_mn, mn)
    report("CCC (non-starters)", [k for k in ud_ccc if k not in ud_decomp], list(ccc))
    report("NFD (decomposable)", list(ud_decomp), list(decomp))
    changed = [k for k in decomp if k in ud_decomp and ud_decomp[k] != decomp[k]]
    print(f"NFD values that differ from unicodedata: {len(changed)}",
          ", ".join(f"U+{x:04X}" for x in changed[:12]))

    def emit_ranges(f, name, doc, rs, with_value=False):
        ty = "(u32, u32, u8)" if with_value else "(u32, u32)"
        f.write(f"/// {doc}\n")
        f.write(f"pub(crate) static {name}: [{ty}; {len(rs)}] = [\n")
        line = "   "
        for a, b, v in rs:
            item = f" (0x{a:X}, 0x{b:X}, {v})," if with_value else f" (0x{a:X}, 0x{b:X}),"
            if len(line) + len(item) > 99:
                f.write(line + "\n")
                line = "   "
            line += item
        f.write(line + "\n];\n\n")

    def rust_str(s):
        return "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else f"\\u{{{ord(c):x}}}" for c in s)

    with open(out_path, "w", encoding="utf-8") as f:
        f.write(
            "// @generated by tools/scripts/gen_unicode_tables.py from the reference tokenizer\n"
            f"// (Python `tokenizers` {tokenizers.__version__}: BertNormalizer, NFD, BertPreTokenizer),\n"
            f"// cross-checked against Python `unicodedata` {unicodedata.unidata_version}. Do not edit.\n"
            "//! Unicode tables of the BERT basic tokenizer, sorted by code point.\n\n")
        emit_ranges(f, "REMOVED", "Chars that text cleaning deletes (Cc, Cf, Co but `\\t \\n \\r`; U+0000; U+FFFD).",
                    ranges(removed))
        emit_ranges(f, "CJK", "Chars that are split off as words of their own (CJK ideographs).", ranges(chinese))
        emit_ranges(f, "PUNCT", "Chars that the pre-tokenizer splits off (ASCII punctuation and Unicode P*).",
                    ranges(punct))
        emit_ranges(f, "MN", "Chars that accent stripping drops after NFD (nonspacing marks, Mn).", ranges(mn))
        emit_ranges(f, "CCC", "Canonical combining class of the non-starters: `(first, last, class)`.",
                    ranges(ccc, ccc.get), with_value=True)
        items = sorted(decomp.items())
        f.write("/// Full canonical decomposition (NFD) of every char that has one, but Hangul syllables.\n")
        f.write(f"pub(crate) static NFD: [(u32, &str); {len(items)}] = [\n")
        line = "   "
        for cp, s in items:
            item = f" (0x{cp:X}, \"{rust_str(s)}\"),"
            if len(line) + len(item) > 99:
                f.write(line + "\n")
                line = "   "
            line += item
        f.write(line + "\n];\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
