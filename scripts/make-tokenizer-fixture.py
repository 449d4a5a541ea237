"""Writes __test__/fixtures/tokenizer/: a small byte-level BPE tokenizer trained with Hugging Face's
`tokenizers` (as Llama 3 and Qwen2 use), its tokenizer_config.json with a ChatML chat template, and
expected.json: the ids `tokenizers` gives for hard strings and the chat `transformers`' apply_chat_template
renders. The JS side (lib/model/tokenizer.ts) is tested against these in CI; nobody here wrote the reference.

    pip install tokenizers transformers && python3 scripts/make-tokenizer-fixture.py
"""
import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from text_samples import CHATML, CORPUS_LINES, MESSAGES
from text_samples import HARD as HARD_TEXT

OUT = os.path.join(os.path.dirname(__file__), "..", "__test__", "fixtures", "tokenizer")
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
CORPUS = CORPUS_LINES * 20
TEMPLATE = CHATML
HARD = [*HARD_TEXT, "<|im_start|>special tokens inside text<|im_end|>", ""]


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(os.path.join(OUT, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|end_of_text|>",
        "chat_template": TEMPLATE,
        "model_max_length": 4096,
    }
    with open(os.path.join(OUT, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    fast = PreTrainedTokenizerFast(tokenizer_file=os.path.join(OUT, "tokenizer.json"), **{k: v for k, v in config.items() if k != "tokenizer_class"})
    expected = {
        "encode": [{"text": s, "ids": tok.encode(s).ids, "decoded": tok.decode(tok.encode(s).ids, skip_special_tokens=False)} for s in HARD],
        "chat": {
            "messages": MESSAGES,
            "rendered": fast.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
            "ids": tok.encode(fast.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)).ids,
        },
        "special": {t: tok.token_to_id(t) for t in SPECIAL},
        "vocab_size": tok.get_vocab_size(),
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
    print(f"vocab {tok.get_vocab_size()}; {len(HARD)} strings; chat of {len(expected['chat']['ids'])} tokens")


if __name__ == "__main__":
    main()
