#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/: a tiny GPT-2-style byte-level BPE trained with the
Hugging Face `tokenizers` package, and the ids that `tokenizers` gives for a few hundred
test strings. tests/curriculum/test_tokenizers.cpp checks that our BpeTokenizer
reproduces every id exactly.

Files:
  vocab.json, merges.txt  the BPE model in the format of the `gpt2` model's files
  cases.json              {"added_tokens": {token: id}, "vocab_size": n,
                           "cases": [{"text": str, "ids": [int], "pieces": [str]}]}
                          pieces: the GPT-2 regex split of the text (no special tokens)

The tokenizer mirrors GPT-2 plus the Coconut reference's additions: ByteLevel
pre-tokenizer (GPT-2 regex, no prefix space), BPE without unk, "<|endoftext|>" in the
base vocab, then "<|start-latent|>", "<|end-latent|>", "<|latent|>" added after it.

Independent cross-checks run here (not in CI), and the script fails if one disagrees:
  - the ByteLevel split equals GPT-2's own pre-tokenisation, re.findall with GPT-2's
    pattern in the `regex` module (what openai/gpt-2's encoder.py does);
  - transformers' pure-Python GPT2Tokenizer, loaded from the same two files with the
    same added tokens, gives the same ids.

    python3 tools/make_tokenizer_fixture.py
"""
import json
import os
import random
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                       "tokenizer")
SPECIALS = ["<|endoftext|>", "<|start-latent|>", "<|end-latent|>", "<|latent|>"]
VOCAB_SIZE = 1000
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# ---- training text (our own) ----

ENGLISH = """Every shumpus is a rempus. Every rempus is a yimpus. Tom is a shumpus.
Is Tom a yimpus or a gwompus? Tom is a yimpus.
Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.
How many clips did Natalia sell altogether in April and May? <<48/2=24>> <<48+24=72>> #### 72
I don't know what you're talking about, but I'll find out. We've seen it; they'd agree.
She said: "It's 3.14159, not 22/7!" (That's the difference.) Isn't it?
The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.
In 1969, 600,000,000 people watched; 42% of them cheered... and 7 cried.
def f(x):\n    return x * 2  # doubles\n\tif (a && b) { c[i] = d; }
Email: someone@example.com, phone +1-555-0100, price $19.99 & tax 8.5%.
"""

WORLD = """Le café est très bon à Paris, naïve façade, déjà vu.
Ärger über Öl und Übermut; Straße, groß. Ångström œuvre.
Быстрая коричневая лиса прыгает через ленивую собаку. Привет, мир!
Η γρήγορη καφέ αλεπού πηδάει. Γειά σου κόσμε!
東京は日本の首都です。私は学生です。中文字符测试，你好世界！
한국어 문장입니다. 안녕하세요 세계!
مرحبا بالعالم، هذا اختبار. ١٢٣ ٤٥٦
שלום עולם, זה מבחן.
नमस्ते दुनिया, यह एक परीक्षण है। ०१२३
สวัสดีชาวโลก นี่คือการทดสอบ
Emoji: 😀 🎉 👍🏽 👨‍👩‍👧 🇫🇷 ❤️ ✨ 🚀🚀🚀
Math: ∑ x² ≤ ∞, ½ + ¼ = ¾, Ⅻ o'clock, π ≈ 3.14, １２３ ＡＢＣ.
"""

WORDS = ["wumpus", "zhorpus", "brimpus", "sterpus", "gorpus", "lempus", "jompus", "dumpus",
         "Alex", "Sally", "Max", "Wren", "Polly", "Rex", "Fae", "Stella"]


def training_text(rng):
    lines = ENGLISH.splitlines() + WORLD.splitlines()
    # ProsQA/ProntoQA-like sentences and arithmetic give the merges realistic statistics.
    for _ in range(400):
        a, b = rng.sample(WORDS, 2)
        lines.append(rng.choice([f"Every {a} is a {b}.", f"{a} is a {b}.",
                                 f"Is {a} a {b} or a {rng.choice(WORDS)}?",
                                 f"{a}s are {b}es. Each {a} is not {b}."]))
        x, y = rng.randrange(1000), rng.randrange(1000)
        lines.append(f"<<{x}*{y}={x * y}>> #### {x + y}")
    rng.shuffle(lines)
    return ["\n".join(lines[i:i + 8]) for i in range(0, len(lines), 8)] + [ENGLISH, WORLD] * 3

# ---- test strings ----

HANDWRITTEN = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t x", "a", "A", "Hello world",
    "Hello  world", "Hello   world", "Hello\tworld", "Hello \t world", "Hello\n\nworld",
    "  leading spaces", "trailing spaces   ", "trailing newline\n", " \t\n\r mixed \r\n\t  ",
    "line one\nline two\n  indented\n\tTabbed\n", "Every shumpus is a rempus.",
    "Is Tom a zhorpus or a brimpus?", "Tom is a brimpus.", "Every tumpus is not angry.",
    "True or false: Alex is not shy.",
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "#### 1,000,000",
    "don't", "Don't", "DON'T", "I'LL", "I'll", "we're", "they've", "I'm", "she'll", "he'd",
    "it's", "It'S", "'s", "'sa", "''", "'", "O'Neil's rock'n'roll", "you 're", " 's", "x's's",
    "'re'll'd'm've't", "12345", "3.14159", "1,000,000", "-42", "+7e-10", "2024-05-09",
    "a1b2c3", "v2.0.1", "0x1F600", "٣٤٥ and ١٢", "０１２３ fullwidth", "x² + y³ = z¹⁰",
    "½ ¼ ¾", "Ⅻ Ⅳ ⅷ", "٢٠٢٤", "٣4", "12½", "½!", "Ⅻ.", "x²!", "١٢,٣٤", "é.", "Ω+", "ab١", "!!!", "...", "?!", "$$$", "#", "##", "### 42", "<<a=b>>",
    "(parenthesised)", "[brackets] {braces}", "a--b__c", "@user #tag", "100%", "C++ & C#",
    "\"quoted\" 'single'", "semi;colon:colon", "café", "naïve façade", "Ångström", "œuvre",
    "Straße", "Привет, мир!", "Γειά σου κόσμε", "東京は日本の首都です。", "你好，世界！",
    "안녕하세요 세계", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก",
    "ﬁne ligature", "ÀÉÎÕÜ àéîõü", "😀", "😀😀", " 😀", "🎉 party", "👍🏽", "👨‍👩‍👧",
    "🇫🇷🇩🇪", "❤️", "a😀b", "emoji😀 in😀 words", "🚀 3 2 1", "\u00a0non-breaking\u00a0space",
    "ideographic\u3000space", "line\u2028separator", "para\u2029graph", "thin\u2009space",
    "zero\u200bwidth", "bom\ufeffinside", "nel\u0085char", "ogham\u1680space",
    "file\x1cseparator", "mongolian\u180evowel", "ctrl\x00\x01\x7f", "bell\x07",
    "combining e\u0301 and a\u0308", "Devanagari ह\u093f", "Hangul jamo \u1100\u1161",
    "<|endoftext|>", "<|latent|>", "<|start-latent|>", "<|end-latent|>",
    "<|start-latent|><|latent|><|latent|><|end-latent|>",
    "question\n<|start-latent|><|latent|><|latent|><|latent|><|end-latent|>step\n### 5<|endoftext|>",
    "a<|endoftext|>b", "a <|endoftext|> b", " <|latent|> ", "  <|latent|>  ", "<|latent|>\n",
    "<|latent|><|latent|>", "<|latent", "latent|>", "<|latent|", "|latent|>", "<|LATENT|>",
    "<|latent |>", "<<|latent|>>", "<|endoftext|><|endoftext|>", "text<|endoftext|>",
    "<|endoftext|>text", "<| endoftext |>", "<|start-latent|>don't<|end-latent|>",
    "Is Tom a zhorpus or a brimpus?\n<|start-latent|><|latent|><|end-latent|>"
    "Tom is a terpus.\n### Tom is a brimpus.<|endoftext|>",
    "    def f(x):\n        return x * 2\n", "if (a && b) { c[i] = d; }", "a\tb\tc\n1\t2\t3",
    "path/to/file.txt", "https://example.com/a?b=c&d=e", "snake_case and camelCase",
    "ALLCAPS SENTENCE HERE", "MiXeD cAsE", "x" * 60, "ab" * 40, " " * 30 + "x",
    "\n" * 10, "a" + " " * 7 + "b" + "\t" * 3 + "c", "word\n  \nword", "end with space ",
    "end with tab\t", "end with tabs and spaces \t \t", "  \t", "\t  x",
]

FRAGMENTS = [
    "Every", " wumpus", " is", " a", " rempus", ".", "?", "!", ",", ":", ";", "don't", " I'LL",
    " we've", "'s", " 42", "3.5", " 1,024", "<<", "=", ">>", " ####", " ", "  ", "   ", "\t",
    "\n", "\n\n", " \n", "café", " naïve", " Привет", " мир", " 東京", "世界", " 안녕", " مرحبا",
    " שלום", " नमस्ते", " 😀", "🎉", "👍🏽", " ½", "١٢", "Ⅻ", "\u00a0", "\u3000", "'", "\"", "(",
    ")", "#", "<|latent|>", "<|start-latent|>", "<|end-latent|>", "<|endoftext|>", "<|", "|>",
    "Tom", "Alex", " zhorpus", " or", " not", " TRUE", "false", "x", "y", "z", "é", "\u0301",
]


def test_strings(rng):
    cases = list(HANDWRITTEN)
    for _ in range(150):
        cases.append("".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 12))))
    seen, unique = set(), []
    for c in cases:
        if c not in seen:
            seen.add(c)
            unique.append(c)
    return unique

# ---- building and checking ----


def byte_level_pre_tokenizer():
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def train(rng, tmp_dir):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = byte_level_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(training_text(rng), trainer=trainer)
    tok.model.save(tmp_dir)


def load_with_specials(directory):
    """The tokenizer under test, rebuilt from the saved files like a GPT-2 checkpoint."""
    bpe = models.BPE.from_file(os.path.join(directory, "vocab.json"),
                               os.path.join(directory, "merges.txt"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = byte_level_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return tok


def check_against_gpt2_regex(strings):
    """Our reference splits text like openai's encoder.py (outside the special tokens)."""
    import regex
    pattern = regex.compile(GPT2_PATTERN)
    pre = byte_level_pre_tokenizer()
    byte_map = {b: c for b, c in zip(range(256), bytes_to_unicode())}
    bad = 0
    for s in strings:
        for segment in regex.split("(" + "|".join(regex.escape(t) for t in SPECIALS) + ")", s):
            if segment in SPECIALS or not segment:
                continue
            theirs = [p for p, _ in pre.pre_tokenize_str(segment)]
            gpt2 = ["".join(byte_map[b] for b in m.encode("utf-8"))
                    for m in pattern.findall(segment)]
            if theirs != gpt2:
                bad += 1
                print(f"pre-tokenisation differs on {segment!r}: {theirs} vs {gpt2}")
    return bad == 0


def bytes_to_unicode():
    """GPT-2's byte -> printable character table, as a list indexed by byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def check_against_transformers(directory, strings, expected):
    from transformers import GPT2Tokenizer
    slow = GPT2Tokenizer(os.path.join(directory, "vocab.json"),
                         os.path.join(directory, "merges.txt"))
    slow.add_tokens(SPECIALS[1:])  # as the Coconut reference does; <|endoftext|> is built in
    bad = 0
    for s, ids in zip(strings, expected):
        theirs = slow.encode(s, add_special_tokens=False)
        if theirs != ids:
            bad += 1
            print(f"transformers' GPT2Tokenizer differs on {s!r}: {theirs} vs {ids}")
    return bad == 0


def main():
    rng = random.Random(2412_06769)
    os.makedirs(OUT_DIR, exist_ok=True)
    train(rng, OUT_DIR)
    tok = load_with_specials(OUT_DIR)
    strings = test_strings(rng)
    cases = []
    for s in strings:
        ids = tok.encode(s, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == s, f"no round trip for {s!r}"
        # The regex split of the whole text (special tokens taken as ordinary text): a
        # wrong split often gives the same ids when no merge crosses the boundary.
        pieces = [s[a:b] for _, (a, b) in byte_level_pre_tokenizer().pre_tokenize_str(s)]
        assert "".join(pieces) == s
        cases.append({"text": s, "ids": ids, "pieces": pieces})
    added = {t: tok.token_to_id(t) for t in SPECIALS}
    with open(os.path.join(OUT_DIR, "cases.json"), "w", encoding="ascii") as f:
        json.dump({"added_tokens": added, "vocab_size": tok.get_vocab_size(with_added_tokens=True),
                   "cases": cases}, f, ensure_ascii=True, indent=0)
        f.write("\n")
    print(f"{len(cases)} cases, vocab {tok.get_vocab_size(with_added_tokens=True)}, added {added}")

    ok = check_against_gpt2_regex(strings)
    ok = check_against_transformers(OUT_DIR, strings, [c["ids"] for c in cases]) and ok
    if not ok:
        sys.exit("cross-checks failed: see above")
    print("cross-checks passed: GPT-2 regex split and transformers' GPT2Tokenizer agree")


if __name__ == "__main__":
    main()
