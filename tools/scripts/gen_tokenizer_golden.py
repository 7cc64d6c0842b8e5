#!/usr/bin/env python3
"""Generate fixtures/tokenizer/golden.jsonl: reference ids and offsets of the MiniLM tokenizer.

Usage: gen_tokenizer_golden.py MODEL_DIR [OUT.jsonl]
  MODEL_DIR: directory with the `tokenizer.json` of sentence-transformers/all-MiniLM-L6-v2
  OUT:       default fixtures/tokenizer/golden.jsonl next to this repository's tools/
Needs the `tokenizers` package from PyPI (e.g. `python3 -m venv .venv-tokenizers &&
.venv-tokenizers/bin/pip install tokenizers`).

Each output line: {"text": ..., "ids": [CLS ... SEP], "offsets": [[start, end], ...]} with
offsets in chars, one pair per id, as `tokenizers` returns them ([0, 0] for [CLS]/[SEP]).
The strings are hand-written cases plus seeded random mixes, so the file is reproducible.
"""

import json
import os
import random
import sys

from tokenizers import Tokenizer

HAND = [
    "Angela Merkel visited the Siemens plant in Erlangen on Tuesday.",
    "The quick brown fox jumps over the lazy dog.",
    "EU rejects German call to boycott British lamb .",
    "Peter Blackburn",
    "BRUSSELS 1996-08-22",
    "Hello, World! How ARE you doing today?",
    "iPhone, eBay, McDonald's, O'Neill, MacBook Pro",
    "Don't you think it's John's? They'd've said \"no\".",
    "Rock 'n' roll — it’s “quoted” and ‘single-quoted’.",
    "Café au lait, naïve façade, résumé, coöperate, jalapeño, piñata.",
    "São Paulo, Zürich, Ångström, Øresund, Łódź, Kraków, Dvořák.",
    "ÉCOLE NORMALE SUPÉRIEURE — ÎLE-DE-FRANCE",
    "e\u0301 vs \u00e9, a\u0308 vs \u00e4, n\u0303 vs \u00f1",
    "cafe\u0301 and re\u0301sume\u0301 with combining accents",
    "\u0301\u0302 leading marks, and marks after punctuation .\u0301 x",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034da\u0360\u0363\u0303\u0346\u0315lgo text",
    "İstanbul, ıspanak, DİYARBAKIR, Iğdır",
    "Straße, STRASSE, ǅemal, ǈubljana, ﬁnance, ﬀ ligature",
    "ΑΘΗΝΑ Αθήνα, Ελληνικά: Σίσυφος ΟΔΥΣΣΕΥΣ",
    "Москва — столица России. Ёжик, ЁЛКА, йогурт.",
    "Київ, Україна; Беларусь; Српски језик",
    "العربية: مرحبا بالعالم! القاهرة ٢٠٢٤",
    "عَرَبِيٌّ مُشَكَّلٌ بالحركات",
    "עברית: שלום עולם, ירושלים",
    "हिन्दी: नमस्ते दुनिया, भारत की राजधानी नई दिल्ली है।",
    "ภาษาไทย สวัสดีครับ กรุงเทพมหานคร",
    "বাংলা ভাষা, தமிழ் மொழி, తెలుగు, ಕನ್ನಡ, മലയാളം",
    "ქართული ენა, Հայերեն, አማርኛ",
    "中文：北京是中华人民共和国的首都。",
    "我爱自然语言处理！",
    "日本語のテキスト：東京タワーに行きました。",
    "ひらがな カタカナ ｶﾀｶﾅ 漢字混じり文",
    "한국어 텍스트: 서울은 대한민국의 수도입니다.",
    "한글 자모 ㄱㄴㄷ ᄀᄁ 깍뚜기",
    "Mixed 中文 and English, 日本 and 한국.",
    "CJK extension: 𠀀𠀁 𪜀 𫝀 𫠠 𬺰 丽 丸 豈 更",
    "Emoji: 😀 😃 😄 🎉 🚀 ❤️ 👍",
    "Family: 👨‍👩‍👧‍👦, couple: 👩‍❤️‍👨, flag: 🇫🇷 🇯🇵 🏳️‍🌈",
    "Skin tones: 👋🏻 👋🏼 👋🏽 👋🏾 👋🏿",
    "Newer emoji: 🥰 🥺 🫠 🫶 🧑‍💻",
    "Keycaps 1️⃣ #️⃣ and variation ☺︎ ☺️",
    "null\u0000char, bell\u0007char, escape\u001bchar",
    "zero\u200bwidth\u200bspace and\u200cnon\u200djoiner",
    "\ufeffBOM at start and \ufeff in the middle",
    "replacement \ufffd char \ufffd\ufffd",
    "soft\u00adhyphen and word\u2060joiner",
    "bidi \u202aembedding\u202c and \u200fRLM\u200e LRM",
    "tabs\tand\nnewlines\r\nand\x0bvertical\x0cfeed",
    "non\u00a0breaking\u00a0space, narrow\u202fno-break",
    "ideographic\u3000space\u3000here",
    "em\u2003space, en\u2002space, thin\u2009space, hair\u200aspace",
    "line\u2028separator and paragraph\u2029separator",
    "next\u0085line and \u180emongolian",
    "  leading and trailing spaces   ",
    "",
    " ",
    "\t\n\r ",
    "\u0000\u0007\u200b",
    "a",
    ".",
    "...",
    "!!!???",
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
    "a" * 100,
    "a" * 101,
    "b" * 99 + "\u0301",
    "x" * 150 + " short " + "y" * 101,
    "é" * 101,
    "ab" * 60,
    "https://www.example.com/path/to/page?query=value&other=123#section",
    "http://sub.domain.co.uk:8080/index.html",
    "ftp://files.example.org/pub/file-1.2.3.tar.gz",
    "Contact john.doe+news@example.com or jane_smith@mail.example.org.",
    "@username #hashtag $TICKER %percent ^caret &amp; *star*",
    "Prices: $1,234.56, €99.99, £12, ¥1000, ₹500, ₩10,000, ₿0.5",
    "Numbers: 3.14159, -42, +7, 1e-10, 0x1F, 1/2, 50%, 1,000,000",
    "Dates: 2024-01-15, 15/01/2024, Jan. 15th, 2024; 10:30 a.m.",
    "Phone: +1 (555) 123-4567, ext. 89",
    "Version v2.0.1-beta+build.42",
    "Math: x² + y² = z², ∑ᵢ aᵢ, ∫₀^∞ f(x)dx, √2 ≈ 1.414, π ≠ 3",
    "Logic: ∀x ∃y (x < y) ⇒ ¬(y ≤ x), A ∪ B ∩ C ⊆ D",
    "Fractions ½ ⅓ ¼ and superscripts ¹²³ and roman Ⅻ ⅻ",
    "Full-width: ＡＢＣ ｄｅｆ １２３ ！？",
    "Brackets (round) [square] {curly} <angle> «guillemets» 「かぎ」【隅付き】",
    "Dashes: - – — ― and ellipsis … and bullets • ‣ ·",
    "Quotes: \"double\" 'single' `back` „low“ ‚low‘ ‹single›",
    "Symbols: © ® ™ § ¶ † ‡ ° ± × ÷ ‰ ′ ″",
    "Arrows: ← → ↑ ↓ ↔ ⇐ ⇒ and shapes ■ □ ▲ △ ● ○ ★ ☆",
    "Music ♩ ♪ ♫ ♬ and chess ♔ ♕ ♖ and cards ♠ ♥ ♦ ♣",
    "[CLS] literal special tokens [SEP] inside [MASK] text [PAD] [UNK]",
    "a[SEP]b [CLS][CLS] [[SEP]] [sep] [Mask] [UNK]x",
    "\u200b[SEP]\u0301 after",
    "unused tokens [unused0] [unused1] should not match",
    "##prefix ## # ### hash signs",
    "snake_case_identifier and kebab-case-identifier and CamelCaseIdentifier",
    "C++ and C# and F# are languages; so is Obj-C.",
    "Mr. Smith went to Washington, D.C., on Jan. 3rd.",
    "U.S.A. vs. U.K. — e.g., i.e., etc.",
    "The Dow Jones Industrial Average rose 1.5% to 34,500.12 points.",
    "Apple Inc. (NASDAQ: AAPL) reported Q3 revenue of $81.8B.",
    "\"I'll be back,\" said the Terminator.",
    "He said: 'It's 5 o'clock somewhere!'",
    "Vietnamese: Tiếng Việt có dấu, Hà Nội, Thành phố Hồ Chí Minh",
    "Polish: Zażółć gęślą jaźń",
    "Czech: Příliš žluťoučký kůň úpěl ďábelské ódy",
    "Turkish: Pijamalı hasta yağız şoföre çabucak güvendi",
    "Hungarian: Árvíztűrő tükörfúrógép",
    "Icelandic: Þú ert æðislegur, ðæ",
    "Romanian: Școală, țară (comma below) vs Şcoală, ţară (cedilla)",
    "Latin extended: Ǆ ǆ Ǉ ǉ Ǌ ǌ Ǳ ǳ Ȁ ȁ ẞ ß",
    "IPA: ˈɪntərˌnæʃənəl fəˈnɛtɪk ˈælfəbɛt",
    "Old Italic 𐌀𐌁𐌂, Gothic 𐌰𐌱𐌲, Deseret 𐐀𐐨",
    "Mathematical alphanumerics: 𝐀𝐁𝐂 𝒜ℬ𝒞 𝔄𝔅ℭ 𝕬𝕭𝕮",
    "Private use: \ue000\uf8ff and plane 15: \U000f0000",
    "Unassigned: \u0378 \U0001fbff \U000e0000",
    "Tags: 🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    "Musical: 𝅘𝅥𝅮 𝄞 𝄢 \U0001d165\U0001d16d",
    "Balinese ᬅᬓ᭄ᬱᬭ and Javanese ꦗꦮ꧀",
    "Hanunoo ᜣᜲ᜴ and Dives Akuru 𑤸",
    "Arabic marks: \u0890\u0891 \u0898x \u08e2",
    "Mongolian: ᠮᠣᠩᠭᠣᠯ, Tibetan: བོད་ཡིག, Khmer: ភាសាខ្មែរ",
    "Lao: ພາສາລາວ, Myanmar: မြန်မာဘာသာ, Sinhala: සිංහල",
    "Cherokee: ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ, Canadian syllabics: ᓀᐦᐃᔭᐍᐏᐣ",
    "Ethiopic: ሰላም ዓለም, Tifinagh: ⵜⴰⵎⴰⵣⵉⵖⵜ",
    "Dingbats ✂ ✈ ✉ ✔ ✘ ❄ ❤ ➡",
    "Box drawing ┌─┐│└┘ ╔═╗║╚╝",
    "Braille ⠓⠑⠇⠇⠕ and APL ⍴⍳⍺⍵",
    "Combining on CJK: 中\u0301 文\u0308",
    "Reordered marks: x\u0327\u1b44y z, \u00e9\u1b44 q, a\u0301\u0327\u1b44\u0316b c",
    "Balinese marks: \u1b13\u1b44\u0301 \u1b13\u0301\u1b44\u1b13 \u0327\u1b44pq",
    "Musical: \U0001d15f\U0001d16d\U0001d165x a\U0001d16d\U0001d165b \U0001d160 \U0001d165\u0301",
    "Marks the reference does not know: a\u0301\U00016ff0\u0327b, x\u0898y",
    "Marks across removed chars: a\u0327\u200b\u1b44b, e\u0301\u0000\u0302",
    "Combining on digits: 1\u20e3 2\u20dd",
    "Enclosed: ① ② ⑳ Ⓐ ⓐ 🄰 🅰",
    "Halfwidth hangul ﾡﾢ and compatibility jamo ㉠ ㈀",
    "Greek polytonic: ἀρχὴ ἥμισυ παντός, ᾅδης",
    "Ohm Ω vs Omega Ω, Kelvin K vs K, Angstrom Å vs Å",
    "wordpiece-edge: unaffable unbelievably antidisestablishmentarianism",
    "ALL CAPS HEADLINE: PRESIDENT SIGNS BILL INTO LAW",
    "lowercase only sentence with no punctuation at all",
    "Repeated punctuation!!! ??? ... --- ***",
    "Sentence one. Sentence two! Sentence three? Sentence four…",
    "tab\tseparated\tvalues\there",
    "CSV,like,data,\"with quotes\",123",
    "JSON {\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "<html><body class=\"x\">Hello &amp; bye</body></html>",
    "SELECT * FROM users WHERE id = 42;",
    "path\\to\\windows\\file.txt and /usr/local/bin",
    "Hashtags #NLP #MachineLearning and mentions @OpenAI",
    "Ratings: 4.5/5 ★★★★☆ (1,234 reviews)",
    "Temperature: −5 °C, 23°F, 300 K",
    "Chemical: H₂O, CO₂, C₆H₁₂O₆, Fe³⁺",
    "Legal § 12(b)(3) and ¶ 4",
    "Emoticons :) :-( ;P XD <3 ^_^ (╯°□°)╯︵ ┻━┻",
    "ASCII art: \\(^o^)/ ¯\\_(ツ)_/¯",
    "Mixed scripts in a word: abcабвαβγ中文123",
    "Numbers in scripts: ٠١٢٣ ०१२३ ๐๑๒๓ 〇一二三",
    "Super long number 12345678901234567890123456789012345678901234567890",
    "ZWJ inside word: ab\u200dcd and ZWNJ: می\u200cخواهم",
    "Ligatures: ﬀ ﬁ ﬂ ﬃ ﬄ ﬅ ﬆ",
    "Compatibility: ㎏ ㎞ ㍻ ℡ ™ ℃",
    "Circled CJK: ㊀ ㊣ 🈚",
    "Variation selectors: 葛\U000e0100 and ⛄\ufe0f",
    "Surrogate-free astral: 𝟘𝟙𝟚 🀄 🃏",
    "Title Case Names Like Angela Merkel And Barack Obama",
    "Organisations: United Nations, World Health Organization (WHO), NATO",
    "Locations: New York City, Rio de Janeiro, Ho Chi Minh City",
    "A sentence with a very-long-hyphenated-compound-word-that-goes-on-and-on.",
]

POOLS = {
    "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»“”‘’—–…·、。，！？",
    "accents": "éèêëàâäçñÅåÉÈÎÏÔÖÜüøØßłŁžŽčČőűǅ" + "e\u0301a\u0308o\u0302\u0327",
    "cjk": "中文日本語東京北京人民共和国的是在有我他这个们来到时大地为子中你说生国年着就那和要她出也得里后自以会家可下而过天去能对小多然于心学么之都好看起发当没成只如事把还用第样道想作种开美总从无情己面最女但现前些所同日手又行意动方期它头经长儿回位分爱老因很给名法间斯知世什两次使身者被高已亲其进此话常与活正感𠀀𪜀豈"
           + "ひらがなカタカナアイウエオあいうえお한국어서울대한민국가나다라마",
    "emoji": ["😀", "🎉", "🚀", "❤️", "👍🏽", "👨‍👩‍👧", "🇫🇷", "🥰", "🫠", "🧑‍💻", "1️⃣", "🏳️‍🌈"],
    "space": [" ", " ", " ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003", "\u2028"],
    "control": ["\u0000", "\u0007", "\u001b", "\u200b", "\u200d", "\ufeff", "\ufffd", "\u00ad", "\u0085", "\x0b", "\ue000"],
    "other": "ΑαΒβΓγΔδΩωМоскваЖжЁёمرحباשלוםनमस्तेสวัสดี©®™°±×÷∑∫√∞≈≠≤≥€£¥₹",
    "marks": ["\u0300", "\u0301", "\u0308", "\u0303", "\u0327", "\u064b", "\u094d", "\u0e31", "\u1734", "\u1b44"],
    "special": ["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[", "]", "##"],
}

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but "
    "have an they you were her she there one all we can their has been if more when will would who so "
    "government president minister company market percent million billion shares police officials "
    "international championship tournament unbelievable reconsideration antidisestablishment "
    "Reuters Washington London Germany Merkel Obama Microsoft Google Amazon Tokyo Beijing Paris"
).split()


def pick(rng, pool):
    items = POOLS[pool]
    return items[rng.randrange(len(items))]


def random_mix(rng, weights):
    n = rng.randint(1, 40)
    names = list(weights)
    out = []
    for _ in range(n):
        pool = rng.choices(names, weights=[weights[k] for k in names])[0]
        if pool == "ascii" and rng.random() < 0.5:
            out.append(rng.choice(WORDS))
        elif pool == "ascii":
            out.append("".join(pick(rng, "ascii") for _ in range(rng.randint(1, 12))))
        else:
            out.append(pick(rng, pool))
    return "".join(out)


def random_sentence(rng):
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 25))]
    if rng.random() < 0.5:
        words[0] = words[0].capitalize()
    text = " ".join(words)
    return text + rng.choice([".", "!", "?", "", " ."])


def generated(rng):
    out = []
    for _ in range(60):
        out.append(random_sentence(rng))
    mixes = [
        {"ascii": 5, "punct": 2, "space": 3},
        {"ascii": 3, "accents": 3, "marks": 1, "space": 2},
        {"cjk": 5, "ascii": 1, "punct": 1, "space": 1},
        {"emoji": 3, "ascii": 3, "space": 2},
        {"control": 2, "ascii": 4, "space": 2, "punct": 1},
        {"other": 4, "ascii": 2, "space": 2, "marks": 1},
        {"special": 2, "ascii": 3, "space": 2, "punct": 1},
        {"ascii": 2, "punct": 1, "accents": 1, "cjk": 1, "emoji": 1, "control": 1, "other": 1, "marks": 1, "space": 2, "special": 1},
    ]
    for weights in mixes:
        for _ in range(25):
            out.append(random_mix(rng, weights))
    for _ in range(20):
        cps = []
        for _ in range(rng.randint(1, 20)):
            r = rng.random()
            if r < 0.4:
                cps.append(rng.randint(0x20, 0x7E))
            elif r < 0.7:
                cps.append(rng.randint(0xA0, 0x2FFF))
            elif r < 0.8:
                cps.append(0x20)
            else:
                cp = rng.randint(0x3000, 0x10FFFF)
                cps.append(cp if not 0xD800 <= cp <= 0xDFFF else 0x41)
        out.append("".join(map(chr, cps)))
    return out


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    model_dir = sys.argv[1]
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(__file__), "..", "..", "fixtures", "tokenizer", "golden.jsonl")
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    texts = HAND + generated(random.Random(20240611))
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        for text in texts:
            enc = tok.encode(text)
            line = {"text": text, "ids": enc.ids, "offsets": [list(o) for o in enc.offsets]}
            f.write(json.dumps(line, ensure_ascii=True) + "\n")
    print(f"wrote {len(texts)} lines to {out_path}")


if __name__ == "__main__":
    main()
