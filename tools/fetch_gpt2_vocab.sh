#!/usr/bin/env bash
# Fetches the real GPT-2 tokenizer files (vocab.json, merges.txt) into DIR, for the tests
# that need them (COCONUT_GPT2_DIR) and for tools/make_gpt2_bpe_fixture.py. They come
# from a release of OpenAI's Whisper on PyPI, whose English tokenizer is GPT-2's: the
# source archive of openai-whisper 20230124 carries whisper/assets/gpt2/ (MIT licence).
# The archive is pinned by its SHA-256 (PyPI's), and the two files by theirs. Nothing
# is committed to this repository. Exit 1 when the download or a check fails.
#   usage: tools/fetch_gpt2_vocab.sh DIR
set -euo pipefail
dest=${1:?usage: tools/fetch_gpt2_vocab.sh DIR}
url=https://files.pythonhosted.org/packages/00/c6/fb251c4f7de1c78753a2d54d6aaf1a859ddc3797ed4d6003f15866f4c4a4/openai-whisper-20230124.tar.gz
archive_sha=31adf9353bf0e3f891b6618896f22c65cf78cd6f845a4d5b7125aa5102187f79
vocab_sha=3ba3c3109ff33976c4bd966589c11ee14fcaa1f4c9e5e154c2ed7f99d80709e7
merges_sha=fe36cab26d4f4421ed725e10a2e9ddb7f799449c603a96e7f29b5a3c82a95862

check() {  # check FILE SHA256
  [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}
if [[ -f $dest/vocab.json && -f $dest/merges.txt ]] && check "$dest/vocab.json" $vocab_sha &&
   check "$dest/merges.txt" $merges_sha; then
  exit 0  # already there
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$url" "$tmp/whisper.tar.gz" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=120) as r, open(sys.argv[2], "wb") as f:
    f.write(r.read())
PY
check "$tmp/whisper.tar.gz" $archive_sha || { echo "fetch_gpt2_vocab: $url: unexpected SHA-256" >&2; exit 1; }
tar -xzf "$tmp/whisper.tar.gz" -C "$tmp" openai-whisper-20230124/whisper/assets/gpt2/vocab.json \
  openai-whisper-20230124/whisper/assets/gpt2/merges.txt
src=$tmp/openai-whisper-20230124/whisper/assets/gpt2
check "$src/vocab.json" $vocab_sha && check "$src/merges.txt" $merges_sha ||
  { echo "fetch_gpt2_vocab: the archive's GPT-2 files have an unexpected SHA-256" >&2; exit 1; }
mkdir -p "$dest"
cp "$src/vocab.json" "$src/merges.txt" "$dest/"
echo "fetch_gpt2_vocab: GPT-2 vocab.json and merges.txt in $dest"
