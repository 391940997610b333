"""A captioning vocabulary and tokenizer, framework-free: what yunjey/pytorch-tutorial's
``image_captioning/build_vocab.py`` builds, without nltk.

``build_vocab(captions, threshold)`` counts the tokens of every caption and keeps the words seen
at least ``threshold`` times, after the four special tokens in the tutorial's order: ``<pad>`` = 0
(what ``collate_fn`` pads with), ``<start>`` = 1, ``<end>`` = 2, ``<unk>`` = 3; kept words follow
in order of first appearance (the tutorial's ``Counter`` iteration order). ``encode`` gives
``[<start>, *words, <end>]`` with unknown words as ``<unk>``, as the tutorial's ``CocoDataset``
does; ``decode`` stops at ``<end>`` as its ``sample.py`` does.

Tokenization: the tutorial calls ``nltk.tokenize.word_tokenize(caption.lower())``. ``tokenize``
is a regular expression instead (no nltk dependency): lowercase, then runs of letters / digits
with inner apostrophes or hyphens kept (``man's``, ``t-shirt``), and every other non-space
character a token of its own. Where it differs from nltk's Treebank tokenizer: nltk splits
clitics (``man's`` -> ``man``, ``'s``; ``don't`` -> ``do``, ``n't``), turns double quotes into
`````` / ``''`` and keeps ``...`` as one token and some abbreviations' periods (``St.``);
here they stay one word, quotes stay ``"`` and every period is a token. On COCO-style captions
(lowercase words, commas, a final period) the two agree except for apostrophes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["END", "PAD", "SPECIALS", "START", "UNK", "Vocabulary", "build_vocab", "tokenize"]

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
#: the special tokens, at indexes 0..3 in this order (the tutorial's)
SPECIALS = (PAD, START, END, UNK)

_TOKEN = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*|[^\w\s]|_")


def tokenize(text: str) -> list[str]:
    """Lowercased words (letters / digits, inner ``'`` and ``-`` kept) and single punctuation
    marks: ``"A man's T-shirt, red."`` -> ``['a', "man's", 't-shirt', ',', 'red', '.']``."""
    return _TOKEN.findall(text.lower())


@dataclass
class Vocabulary:
    """word <-> index, the tutorial's ``Vocabulary`` (``word2idx``, ``idx2word``, ``__call__``
    mapping unknown words to ``<unk>``, ``len``)."""

    word2idx: dict[str, int] = field(default_factory=dict)
    idx2word: dict[int, str] = field(default_factory=dict)

    def add_word(self, word: str) -> None:
        if word not in self.word2idx:
            self.word2idx[word] = len(self.word2idx)
            self.idx2word[self.word2idx[word]] = word

    def __call__(self, word: str) -> int:
        return self.word2idx.get(word, self.word2idx[UNK])

    def __len__(self) -> int:
        return len(self.word2idx)

    def encode(self, caption: str) -> list[int]:
        """``[<start>, *tokens, <end>]`` as indexes (unknown words: ``<unk>``)."""
        return [self(START), *(self(t) for t in tokenize(caption)), self(END)]

    def decode(self, ids: Iterable[int], stop_at_end: bool = True) -> list[str]:
        """The words of ``ids`` up to (without) the first ``<end>``; ``<start>`` dropped, as
        the tutorial's ``sample.py`` prints them."""
        words = []
        for i in ids:
            word = self.idx2word[int(i)]
            if word == END and stop_at_end:
                break
            if word != START:
                words.append(word)
        return words


def build_vocab(captions: Iterable[str], threshold: int) -> Vocabulary:
    """The specials, then every word seen at least ``threshold`` times, in order of first
    appearance."""
    if threshold < 1:
        raise ValueError(f"threshold {threshold}: a word must be seen at least once")
    counter: Counter[str] = Counter()
    for caption in captions:
        counter.update(tokenize(caption))
    vocab = Vocabulary()
    for word in SPECIALS:
        vocab.add_word(word)
    for word, count in counter.items():
        if count >= threshold:
            vocab.add_word(word)
    return vocab


def pad_batch(encoded: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[int]]:
    """The tutorial's ``collate_fn`` on encoded captions: sorted by length, longest first (what
    ``pack_padded_sequence``'s ``enforce_sorted`` needs), padded with ``<pad>`` = 0; the
    captions (B, T) as lists and their lengths. Its order is stable (ties keep input order)."""
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    longest = max((len(c) for c in encoded), default=0)
    rows = [list(encoded[i]) + [0] * (longest - len(encoded[i])) for i in order]
    return rows, [len(encoded[i]) for i in order]
