#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/gsm8k_gpt2.json: what Hugging Face `tokenizers` gives
with the real GPT-2 vocabulary for every line of the GSM8k validation split
(../shared/data/gsm8k_valid.txt), so that tests/curriculum/test_tokenizers.cpp can check
that our BpeTokenizer encodes the paper's GSM8k text exactly as GPT-2 does.

Per line two strings are encoded: the line as it is (question||<<steps>> #### answer),
and the same with "||" turned into a newline and " #### " into "\\n### " (text with
newlines, as the training samples have). The fixture keeps, per string, the number of
ids and an FNV-1a 64 digest of the ids as little-endian int32 (runtime/hash.h), and the
full ids of the first three lines; the vocabulary itself is not committed (it is fetched
by tools/fetch_gpt2_vocab.sh, pinned by SHA-256).

Independent cross-check, run here (not in CI): transformers' pure-Python GPT2Tokenizer,
loaded from the same two files, must give the same ids for every string, else the
script fails.

    bash tools/fetch_gpt2_vocab.sh /tmp/gpt2 && python3 tools/make_gpt2_bpe_fixture.py /tmp/gpt2
"""
import hashlib
import json
import os
import struct
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "shared", "data", "gsm8k_valid.txt")
OUT = os.path.join(HERE, "..", "tests", "fixtures", "tokenizer", "gsm8k_gpt2.json")


def fnv1a64(ids):
    h = 0xCBF29CE484222325
    for byte in b"".join(struct.pack("<i", i) for i in ids):
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def strings_of(line):
    return [line, line.replace("||", "\n").replace(" #### ", "\n### ")]


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    vocab_dir = sys.argv[1]
    vocab, merges = os.path.join(vocab_dir, "vocab.json"), os.path.join(vocab_dir, "merges.txt")
    # GPT-2: byte-level pre-tokenisation (GPT-2's regex, no prefix space), BPE, no unk.
    fast = Tokenizer(models.BPE.from_file(vocab, merges))
    fast.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    fast.decoder = decoders.ByteLevel()
    slow = GPT2Tokenizer(vocab, merges)
    lines = [l for l in open(DATA, encoding="utf-8").read().split("\n") if l]
    entries, first = [], []
    for i, line in enumerate(lines):
        for text in strings_of(line):
            ids = fast.encode(text).ids
            reference = slow.encode(text)
            if ids != reference:
                sys.exit(f"line {i}: tokenizers and transformers' GPT2Tokenizer disagree on {text!r}")
            if fast.decode(ids) != text:
                sys.exit(f"line {i}: decoding does not give the text back")
            entries.append({"n": len(ids), "fnv1a64": fnv1a64(ids)})
            if i < 3:
                first.append(ids)
    fixture = {
        "source": "gsm8k_valid.txt",
        "source_sha256": sha256(DATA),
        "vocab_sha256": sha256(vocab),
        "merges_sha256": sha256(merges),
        "strings_per_line": 2,
        "digest": "FNV-1a 64 of the ids as little-endian int32",
        "lines": len(lines),
        "ids_of_first_lines": first,
        "strings": entries,
    }
    with open(OUT, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {len(entries)} strings of {len(lines)} lines, {sum(e['n'] for e in entries)} ids")


if __name__ == "__main__":
    main()
