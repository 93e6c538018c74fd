"""An offline byte-level BPE tokenizer trained on the offline multilingual corpus, with a chat template.

Hubs are unreachable here, so tiny twins share this tokenizer. It is deterministic (same corpus,
same merges) and cached on disk next to the tiny twins.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def corpus_texts() -> list[str]:
    """Every text of the offline sources in a fixed order: chatterbot Q/A pairs and CLDR names."""
    from harness.data.babel_mc import all_cldr_names
    from harness.data.chatterbot import load_pairs
    from harness.languages import CHATTERBOT_DIRS

    texts: list[str] = []
    for code in sorted(CHATTERBOT_DIRS):
        for prompt, response in load_pairs(code):
            texts += [prompt, response]
    texts += all_cldr_names()
    return texts


def train_tokenizer(vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus_texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|end|>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def offline_tokenizer(cache_dir: Path) -> PreTrainedTokenizerFast:
    """The cached offline tokenizer, trained on first use."""
    path = cache_dir / "tokenizer"
    if (path / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    tok = train_tokenizer()
    tmp = path.with_name(path.name + ".tmp")
    tok.save_pretrained(tmp)
    tmp.rename(path) if not path.exists() else None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
