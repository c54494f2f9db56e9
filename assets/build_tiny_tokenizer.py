"""Build the tiny model's CLIP-style BPE vocabulary (run once; the output is committed).

    python assets/build_tiny_tokenizer.py

Trains byte-level BPE merges with the `tokenizers` library on English text that ships with
Python itself (the help topics in `pydoc_data`), so the build is offline and reproducible, then
lays the vocabulary out the way CLIP's is: 256 byte symbols, the same 256 with the end-of-word
marker `</w>`, one token per merge in merge order, and the two special tokens last.
"""

import json
import re
import sys
from pathlib import Path
from pydoc_data.topics import topics

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

OUT = Path(__file__).parent / "tiny-sd" / "tokenizer"
sys.path.insert(0, str(Path(__file__).parent.parent))  # the byte table is the one the full-size tokenizer uses
from sdviz.standins import bytes_to_unicode  # noqa: E402

VOCAB_SIZE = 2048
SPECIALS = ["<|startoftext|>", "<|endoftext|>"]


def corpus() -> list[str]:
    text = "\n".join(topics[k] for k in sorted(topics))
    return [line.lower() for line in re.split(r"\n+", text) if line.strip()]


def main() -> None:
    byte_chars = list(bytes_to_unicode().values())
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(pattern=r"\w+|[^\w\s]+", behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    n_merges = VOCAB_SIZE - 2 * len(byte_chars) - len(SPECIALS)
    trainer = trainers.BpeTrainer(
        vocab_size=n_merges + len(byte_chars) * 2, initial_alphabet=byte_chars, end_of_word_suffix="</w>", show_progress=False
    )
    tok.train_from_iterator(corpus(), trainer)
    merges = json.loads(tok.to_str())["model"]["merges"][:n_merges]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]

    vocab: dict[str, int] = {}
    for token in byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split(" ")) for m in merges] + SPECIALS:
        vocab.setdefault(token, len(vocab))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    (OUT / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True}
    (OUT / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {OUT}")


if __name__ == "__main__":
    main()
