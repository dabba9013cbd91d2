#!/usr/bin/env python3
"""Generates configs/world/tokenizer.json: the tokenizer of the tiny world's understanding model.

A byte-level BPE with Qwen2's exact pipeline (NFC, Split(Qwen2 regex, Isolated), ByteLevel) and Qwen2/InternVL3's
added tokens, trained on the world's text: captions from the caption grammar, the held-out eval prompts, IOMM's
fixed prompts and editing instructions. Since the C++ tokenizer runs the same pipeline, the product reads the
result like the real InternVL3 tokenizer. Dev-time only (the product never runs Python).

  build/iomm world make --out /tmp/x --captioned 20000 --image-only 10
  python3 scripts/make_world_tokenizer.py --corpus /tmp/x --out configs/world/tokenizer.json
"""
import argparse
import itertools
import json
import pathlib

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

# Qwen2's pre-tokenizer regex (as in Qwen2's tokenizer.json and tests/conformance/test_tokenizer.py).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# In Qwen2/InternVL3's order; <|endoftext|> doubles as the pad token, <|im_end|> ends a turn.
ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]

TEMPLATES = [
    "Generate an image:", "Generate an image.", "Generate an image that is identical to the reference image:",
    "Describe the image.", "user", "assistant", "system", "\n",
]
SHAPES = ["circle", "square", "triangle", "cross"]
COLOURS = ["red", "yellow", "green", "blue", "purple"]


def edit_instructions():
    """Editing instructions for zero-shot editing prompts (SPEC §1)."""
    out = []
    for c in COLOURS:
        out += [f"Change the colour to {c}", f"Change the color to {c}", f"make it {c}", f"Make it {c}.",
                f"Turn it {c}", f"paint the shapes {c}"]
    for a, b in itertools.permutations(SHAPES, 2):
        out += [f"replace the {a} with a {b}", f"Replace the {a} with a {b}.", f"turn the {a} into a {b}"]
    for s in SHAPES:
        for d in ["left", "right", "top", "bottom"]:
            out += [f"move the {s} to the {d}", f"Move the {s} to the {d}."]
        out += [f"remove the {s}", f"add a {s}", f"make the {s} bigger", f"make the {s} smaller"]
    return out


def world_text(corpus: pathlib.Path):
    captions = [json.loads(line)["caption"] for line in (corpus / "captioned" / "index.jsonl").open()]
    prompts = [json.loads(line)["prompt"] for line in (corpus / "prompts" / "eval.jsonl").open()]
    if not captions or not prompts:
        raise SystemExit(f"{corpus}: no captions or prompts; make it with `iomm world make --out {corpus}`")
    # Templated forms too, so that the chat template's pieces ("\n", "user", ...) get merges like in real text.
    chat = [f"<|im_start|>user\nGenerate an image: {p}<|im_end|>\n<|im_start|>assistant\n" for p in prompts]
    return captions + prompts + chat + TEMPLATES * 200 + edit_instructions() * 20


def build(lines, vocab_size):
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    # As in Qwen2/InternVL3: after the BPE vocabulary, special, matched on the raw text.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ADDED])
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, type=pathlib.Path, help="a directory made by `iomm world make`")
    ap.add_argument("--out", default="configs/world/tokenizer.json", type=pathlib.Path)
    ap.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary incl. the 256 bytes")
    args = ap.parse_args()
    tok = build(world_text(args.corpus), args.vocab_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out), pretty=True)
    sample = "a red circle left of a blue square"
    print(f"{args.out}: {tok.get_vocab_size()} ids; {sample!r} -> {tok.encode(sample).tokens}")


if __name__ == "__main__":
    main()
