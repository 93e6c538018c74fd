"""The tiny twins' tokenizer: a byte-level BPE (4,096 tokens) trained on the offline multilingual corpus, with a
chat template, frozen into the repository (``harness/models/tiny_tokenizer/``).

Hubs are unreachable here, so tiny twins share this tokenizer. It is committed rather than trained on first use
because training reads the corpus inside an installed package, and a corpus release moved every token id (and so
every golden loss). Re-train it only deliberately: ``python -m harness.models.tokenizer --freeze "<reason>"``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

FROZEN_DIR = Path(__file__).resolve().parent / "tiny_tokenizer"
VOCAB_SIZE = 4096
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


def train_tokenizer(vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
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


@functools.cache
def _load_frozen() -> PreTrainedTokenizerFast:
    from transformers import AutoTokenizer

    if not (FROZEN_DIR / "tokenizer.json").exists():
        raise FileNotFoundError(f"the frozen tiny tokenizer is missing ({FROZEN_DIR}); restore it from git, or "
                                "re-train it deliberately: python -m harness.models.tokenizer --freeze '<reason>'")
    return AutoTokenizer.from_pretrained(FROZEN_DIR)


def offline_tokenizer() -> PreTrainedTokenizerFast:
    """The frozen tiny tokenizer (a fresh copy: callers may set padding side or pad token)."""
    import copy

    return copy.deepcopy(_load_frozen())


def tokenizer_fingerprint(tok: PreTrainedTokenizerFast) -> str:
    """sha256 (12 hex) of what decides token ids: the serialized tokenizer, its special tokens and chat template."""
    h = hashlib.sha256(tok.backend_tokenizer.to_str().encode())
    h.update(json.dumps([tok.all_special_tokens, tok.chat_template or ""]).encode())
    return h.hexdigest()[:12]


def freeze(reason: str) -> Path:
    """Re-train on the installed corpus and overwrite the frozen tokenizer, with a note of where it came from."""
    from importlib.metadata import version

    tok = train_tokenizer()
    tok.save_pretrained(FROZEN_DIR)
    note = {"fingerprint": tokenizer_fingerprint(tok), "vocab_size": len(tok), "reason": reason,
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sources": {pkg: version(pkg) for pkg in ("chatterbot-corpus", "babel", "tokenizers", "transformers")}}
    (FROZEN_DIR / "provenance.json").write_text(json.dumps(note, indent=2) + "\n")
    return FROZEN_DIR


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--freeze":
        sys.exit('usage: python -m harness.models.tokenizer --freeze "<reason>"  (re-trains the committed tokenizer)')
    print(f"frozen tokenizer written to {freeze(sys.argv[2])}; commit it with the reason and re-record the goldens")
