"""Writes Hugging Face model directories with random weights, made by transformers' own classes and
save_pretrained (the format a downloaded model has), each with a tokenizer trained here by the tokenizers
library and a chat template, and reference.json: what transformers and tokenizers give for them, so the GPU
tests compare cudagraph against code nobody here wrote.

    python3 scripts/make-checkpoints.py OUT_DIR          # the small checkpoints the GPU tests use
    python3 scripts/make-checkpoints.py OUT_DIR --1b     # also llama-1b: a Llama-3.2-1B shape, bf16

Needs torch (with CUDA), transformers and tokenizers. Checkpoints:
  llama3-bf16      Llama 3.x style: llama3 rope scaling, explicit head_dim, tied embeddings, byte-level BPE
  llama-f16        Llama 2 style: linear rope scaling, untied, f16
  qwen2-bf16       Qwen2: q/k/v biases, tied embeddings, ChatML, sharded safetensors with an index
  mistral-bf16     Mistral: byte-fallback BPE (Llama 2 / Mistral tokenizers), [INST] template
  llama-f32        f32 weights (the loader converts them; the reference runs transformers in f16)
"""
import json
import os
import sys

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from text_samples import CHATML, CORPUS_LINES, MESSAGES
from text_samples import HARD as HARD_TEXT

OUT = sys.argv[1]
CORPUS = [*CORPUS_LINES, "Once upon a time, a small model learned to count: one, two, three, four, five."] * 20
HARD = [*HARD_TEXT, ""]
PROMPTS = ["Once upon a time", "The quick brown fox", "東京は", "def forward(x):", "Emoji: 🙂"]
NEW_TOKENS = 64

LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
INST = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] + eos_token }}"
    "{% else %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endif %}{% endfor %}"
)


def byte_level(special, bos):
    """A byte-level BPE (Llama 3, Qwen2): every byte is a symbol, nothing is unknown."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=700, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def byte_fallback(special, bos):
    """A BPE with byte fallback (Llama 2, Mistral): characters it never saw become <0xNN> byte tokens."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=600, special_tokens=special + byte_tokens, limit_alphabet=60))
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def write_tokenizer(path, tok, config):
    os.makedirs(path, exist_ok=True)
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 4096, **config}, f, indent=2, ensure_ascii=False)
    return PreTrainedTokenizerFast.from_pretrained(path)


def make(name, cls, config, tok, tok_config, dtype, reference_dtype=None, shard=None):
    path = os.path.join(OUT, name)
    fast = write_tokenizer(path, tok, tok_config)
    torch.manual_seed(sum(map(ord, name)))
    with torch.device("cuda"):
        model = cls(config).to(dtype).eval()
    eos = fast.convert_tokens_to_ids(tok_config["eos_token"])
    model.generation_config = GenerationConfig(eos_token_id=[eos], bos_token_id=fast.bos_token_id, do_sample=False)
    model.save_pretrained(path, max_shard_size=shard) if shard else model.save_pretrained(path)
    # The reference is the model as users load it (from_pretrained keeps the rotary table in f32; the
    # instance made above has it cast to the model dtype by .to()).
    del model
    model = cls.from_pretrained(path, dtype=reference_dtype or dtype, device_map="cuda").eval()
    ref = {"transformers": transformers.__version__, "torch": torch.__version__, "dtype": str(model.dtype), "prompts": []}
    ref["invFreq"] = model.model.rotary_emb.inv_freq.float().tolist()
    # The reference runs all NEW_TOKENS tokens: no end-of-sequence id (the saved generation_config.json keeps its).
    model.generation_config = GenerationConfig(do_sample=False, pad_token_id=0)
    with torch.no_grad():
        for text in PROMPTS:
            ids = fast(text, return_tensors="pt").input_ids.cuda()
            # An explicit mask: generate would otherwise take a BOS whose id equals pad_token_id for padding.
            mask = torch.ones_like(ids)
            out = model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False, output_scores=True, return_dict_in_generate=True)
            new = out.sequences[0, ids.shape[1] :].tolist()
            assert len(new) == NEW_TOKENS, (name, text, len(new))
            scores = torch.stack(out.scores)[:, 0].float()
            top2 = scores.topk(2, -1).values
            ref["prompts"].append(
                {
                    "text": text,
                    "ids": ids[0].tolist(),
                    "greedy": new,
                    "margins": (top2[:, 0] - top2[:, 1]).tolist(),
                    "top": top2[:, 0].tolist(),
                    "logits0": scores[0].tolist(),
                }
            )
    plain = [tok.encode(s, add_special_tokens=False).ids for s in HARD]
    ref["hard"] = [{"text": s, "ids": ids, "withSpecial": fast(s).input_ids, "decoded": tok.decode(ids, skip_special_tokens=False)} for s, ids in zip(HARD, plain)]
    rendered = fast.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ref["chat"] = {"messages": MESSAGES, "rendered": rendered, "ids": fast(rendered, add_special_tokens=False).input_ids}
    with open(os.path.join(path, "reference.json"), "w") as f:
        json.dump(ref, f, ensure_ascii=False)
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, {model.dtype}, vocab {config.vocab_size}", flush=True)
    del model
    torch.cuda.empty_cache()


def main():
    os.makedirs(OUT, exist_ok=True)
    bl_special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    llama3_tok = byte_level(bl_special, "<|begin_of_text|>")
    ids = {t: llama3_tok.token_to_id(t) for t in bl_special}
    V = llama3_tok.get_vocab_size()
    common = dict(initializer_range=0.08, max_position_embeddings=1024)
    llama3_cfg = dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", chat_template=LLAMA3)
    make(
        "llama3-bf16",
        LlamaForCausalLM,
        LlamaConfig(
            vocab_size=V, hidden_size=256, intermediate_size=640, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, head_dim=48,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
            tie_word_embeddings=True, bos_token_id=ids["<|begin_of_text|>"], eos_token_id=ids["<|eot_id|>"], **common,
        ),
        llama3_tok, llama3_cfg, torch.bfloat16,
    )
    make(
        "llama-f16",
        LlamaForCausalLM,
        LlamaConfig(
            vocab_size=V, hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
            rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}, tie_word_embeddings=False, **common,
        ),
        llama3_tok, llama3_cfg, torch.float16,
    )
    make(
        "llama-f32",
        LlamaForCausalLM,
        LlamaConfig(vocab_size=V, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, **common),
        llama3_tok, llama3_cfg, torch.float32, reference_dtype=torch.float16,
    )
    qwen_special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    qwen_tok = byte_level(qwen_special, None)
    make(
        "qwen2-bf16",
        Qwen2ForCausalLM,
        Qwen2Config(
            vocab_size=qwen_tok.get_vocab_size(), hidden_size=192, intermediate_size=512, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
            tie_word_embeddings=True, use_sliding_window=False, **common,
        ),
        qwen_tok, dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML), torch.bfloat16, shard="300KB",
    )
    m_tok = byte_fallback(["<unk>", "<s>", "</s>"], "<s>")
    make(
        "mistral-bf16",
        MistralForCausalLM,
        MistralConfig(
            vocab_size=m_tok.get_vocab_size(), hidden_size=256, intermediate_size=512, num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=4,
            head_dim=32, sliding_window=4096, **common,
        ),
        m_tok, dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", chat_template=INST), torch.bfloat16,
    )
    if "--1b" in sys.argv:
        path = os.path.join(OUT, "llama-1b")
        write_tokenizer(path, llama3_tok, llama3_cfg)
        cfg = LlamaConfig(
            vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
            rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            tie_word_embeddings=True, max_position_embeddings=131072, initializer_range=0.02,
            bos_token_id=ids["<|begin_of_text|>"], eos_token_id=ids["<|eot_id|>"],
        )
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg).to(torch.bfloat16)
        model.save_pretrained(path)
        print(f"llama-1b: {sum(p.numel() for p in model.parameters())} parameters, bf16", flush=True)


if __name__ == "__main__":
    main()
