"""Conformance: the tiny world's tokenizer (configs/world/tokenizer.json, made by scripts/make_world_tokenizer.py)
gives the same ids in `iomm tokenize` as in Hugging Face `tokenizers`, on the world's own text (captions, eval
prompts, IOMM's templates, chat forms) and on a fuzz corpus of other text."""
import json
import pathlib

import pytest
from tokenizers import Tokenizer

from conftest import ROOT
from test_tokenizer import assert_same_ids, fuzz_strings, iomm_encode, lines

TOKENIZER = ROOT / "configs" / "world" / "tokenizer.json"
SCRIPT = ROOT / "scripts" / "make_world_tokenizer.py"
ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from conftest import run_iomm
    d = tmp_path_factory.mktemp("world")
    run_iomm("world", "make", "--out", d, "--captioned", 300, "--image-only", 1, "--seed", 5)
    return d


def world_strings(world):
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_world_tokenizer", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = mod.world_text(world)  # captions, prompts, chat forms, templates, edit instructions
    img = "<img>" + "<IMG_CONTEXT>" * 16 + "</img>\n"
    captions = [json.loads(line)["caption"] for line in (world / "captioned" / "index.jsonl").open()]
    chat = [f"<|im_start|>user\n{img}Describe the image.<|im_end|>\n<|im_start|>assistant\n{c}<|im_end|>\n"
            for c in captions]
    return list(dict.fromkeys(text + chat))


def test_world_tokenizer_ids_match_tokenizers(iomm, world, tmp_path):
    tok = Tokenizer.from_file(str(TOKENIZER))
    strings = world_strings(world) + fuzz_strings(400, seed=77)
    assert len(strings) > 700
    want = [e.ids for e in tok.encode_batch(strings)]
    got, _ = iomm_encode(iomm, TOKENIZER, strings, tmp_path)
    assert_same_ids(strings, got, want, "configs/world/tokenizer.json")


def test_world_tokenizer_shape(world):
    tok = Tokenizer.from_file(str(TOKENIZER))
    assert 300 <= tok.get_vocab_size() <= 1024
    ids = [tok.token_to_id(t) for t in ADDED]
    assert None not in ids and ids == sorted(ids) and min(ids) >= tok.get_vocab_size() - len(ADDED)
    # The world's words are single tokens after a space; captions stay short.
    for w in ["circle", "square", "triangle", "cross", "red", "yellow", "green", "blue", "purple", "left", "above",
              "below", "three"]:
        assert len(tok.encode(" " + w).ids) == 1, w
    captions = [json.loads(line)["caption"] for line in (world / "captioned" / "index.jsonl").open()]
    assert max(len(tok.encode(c).ids) for c in captions) <= 16


def test_world_tokenizer_decode_round_trip(iomm, world, tmp_path):
    tok = Tokenizer.from_file(str(TOKENIZER))
    strings = world_strings(world)
    ids = [e.ids for e in tok.encode_batch(strings)]
    f = tmp_path / "ids.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in ids))
    got = [json.loads(x) for x in lines(iomm("tokenize", "--tokenizer", TOKENIZER, "--file", f, "--decode").stdout)]
    assert got == strings
