"""Text-generation metrics on token lists: diversity, n-gram overlap, BLEU, Self-BLEU, perplexity.

Pure python/numpy, no models: the same functions score samples from any checkpoint, and the
definitions are the ones the MaskGAN paper and later text-GAN work (Texygen; Caccia et al. 2018)
report, so numbers stay comparable. A sentence is any sequence of hashable tokens (``str`` words
or ``int`` ids). N-grams never cross sentence boundaries.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np

Sentence = Sequence[Hashable]
NGram = tuple[Hashable, ...]

# Chen & Cherry (2014) smoothing "method 1", as used by NLTK's sentence_bleu in Texygen: an order with
# no clipped match gets precision EPSILON / (number of hypothesis n-grams) instead of 0, so one
# missing 4-gram does not zero a sentence's score (and the log stays finite).
BLEU_SMOOTHING_EPSILON = 0.1


def _ngrams(sentence: Sentence, n: int) -> list[NGram]:
    return list(zip(*(sentence[i:] for i in range(n))))


def _check_order(n: int) -> None:
    if n < 1:
        raise ValueError(f"n-gram order must be >= 1, got {n}")


def unique_ngram_fraction(sentences: Sequence[Sentence], n: int) -> float:
    """Percentage of distinct n-grams among all n-grams of the generated text (the paper's Table 6).

    Definition: ``100 * |set of n-grams| / (number of n-gram occurrences)``, counted over the whole
    sample set with n-grams taken inside each sentence (sentences shorter than ``n`` contribute
    none). 100 means no n-gram ever repeats; mode collapse drives it down.
    """
    _check_order(n)
    counts = Counter(g for s in sentences for g in _ngrams(s, n))
    total = sum(counts.values())
    if total == 0:
        raise ValueError(f"no {n}-grams in the {len(sentences)} sentences given (all shorter than {n} tokens?)")
    return 100.0 * len(counts) / total


def validation_ngram_overlap(
    sentences: Sequence[Sentence],
    reference_sentences: Sequence[Sentence],
    ns: Sequence[int] = (2, 3, 4),
    count_distinct: bool = True,
) -> float:
    """The paper's model-selection score: share of generated n-grams seen in the validation set,
    geometric mean over the orders ``ns``; in [0, 1].

    With ``count_distinct=True`` (the authors' code, ``percent_unique_ngrams_in_train``) the
    numerator counts *distinct* generated n-grams found in the references while the denominator
    counts all generated n-gram occurrences, so repetition lowers the score as well as invented
    n-grams. With ``count_distinct=False`` every occurrence found counts: a pure "is it plausible"
    rate that a collapsed generator repeating one valid phrase maximises. Either way the paper warns
    the score can be gamed; read it next to perplexity and diversity.

    The authors' code took validation n-grams from the whole token stream (crossing sentence
    boundaries); to reproduce that, pass the stream as a single reference sentence.
    """
    if not ns:
        raise ValueError("ns is empty: give at least one n-gram order, e.g. (2, 3, 4)")
    fractions = []
    for n in ns:
        _check_order(n)
        generated = Counter(g for s in sentences for g in _ngrams(s, n))
        total = sum(generated.values())
        if total == 0:
            raise ValueError(f"no generated {n}-grams in the {len(sentences)} sentences given")
        reference = {g for s in reference_sentences for g in _ngrams(s, n)}
        found = (
            sum(1 for g in generated if g in reference)
            if count_distinct
            else sum(c for g, c in generated.items() if g in reference)
        )
        fractions.append(found / total)
    if min(fractions) == 0.0:
        return 0.0
    return float(math.exp(sum(math.log(f) for f in fractions) / len(fractions)))


def _select_pool(size: int, k: int, seed: int | None) -> list[int]:
    """Indices of ``k`` items out of ``size``: the first ``k`` if ``seed`` is None, else a seeded sample.

    A seeded sample avoids scoring against one stretch of an ordered corpus (PTB is ordered by
    article); ``seed=None`` keeps the choice stable when more items are appended.
    """
    if seed is None:
        return list(range(k))
    return sorted(np.random.default_rng(seed).choice(size, size=k, replace=False).tolist())


class _ReferenceStats:
    """Per-order maximum reference n-gram counts and reference lengths, built once per reference set.

    For each n-gram it keeps the largest count, the reference index holding it, and the largest
    count among the other references, so "all references but index i" (Self-BLEU) costs one lookup.
    """

    def __init__(self, references: Sequence[Sentence], max_order: int) -> None:
        self.best: list[dict[NGram, tuple[int, int, int]]] = []
        for n in range(1, max_order + 1):
            best: dict[NGram, tuple[int, int, int]] = {}
            for idx, ref in enumerate(references):
                for g, c in Counter(_ngrams(ref, n)).items():
                    top, top_idx, second = best.get(g, (0, -1, 0))
                    best[g] = (c, idx, top) if c > top else (top, top_idx, max(second, c))
            self.best.append(best)
        self.length_counts = Counter(len(r) for r in references)
        self.lengths = sorted(self.length_counts)

    def max_count(self, order: int, gram: NGram, exclude: int) -> int:
        top, top_idx, second = self.best[order - 1].get(gram, (0, -1, 0))
        return second if top_idx == exclude else top

    def closest_length(self, hyp_len: int, exclude_len: int | None) -> int:
        """Reference length closest to ``hyp_len`` (ties: the shorter, as NLTK), not counting one
        excluded reference of length ``exclude_len``."""
        i = bisect.bisect_left(self.lengths, hyp_len)
        # At most one length becomes unusable, so two lengths on each side always hold the answer.
        usable = [
            length
            for length in self.lengths[max(0, i - 2) : i + 2]
            if self.length_counts[length] - (length == exclude_len) > 0
        ]
        return min(usable, key=lambda length: (abs(length - hyp_len), length))


def _sentence_bleu(hyp: Sentence, stats: _ReferenceStats, n: int, exclude: int, exclude_len: int | None) -> float:
    """NLTK ``sentence_bleu`` with uniform weights and smoothing method 1, against ``stats``."""
    log_precision_sum = 0.0
    for order in range(1, n + 1):
        counts = Counter(_ngrams(hyp, order))
        matched = sum(min(c, stats.max_count(order, g, exclude)) for g, c in counts.items())
        total = max(1, sum(counts.values()))
        if matched == 0:
            if order == 1:
                return 0.0  # nothing in common at all; NLTK returns 0 here rather than smoothing
            log_precision_sum += math.log(BLEU_SMOOTHING_EPSILON / total)
        else:
            log_precision_sum += math.log(matched / total)
    hyp_len = len(hyp)
    ref_len = stats.closest_length(hyp_len, exclude_len)
    # Brevity penalty: short hypotheses would otherwise score high precision on a few safe tokens.
    brevity = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return brevity * math.exp(log_precision_sum / n)


def _check_bleu_args(num_hypotheses: int, n: int, num_references: int, available: int, needed: int) -> None:
    _check_order(n)
    if num_hypotheses == 0:
        raise ValueError("no hypotheses to score")
    if num_references < 1:
        raise ValueError(f"num_references must be >= 1, got {num_references}")
    if available < needed:
        raise ValueError(
            f"{available} sentences available but {needed} needed for num_references={num_references}; "
            "lower num_references (BLEU is only comparable at a fixed reference count)"
        )


def bleu(
    hypotheses: Sequence[Sentence],
    references: Sequence[Sentence],
    n: int = 4,
    *,
    num_references: int,
    seed: int | None = 0,
) -> float:
    """BLEU-n of generated text against a reference corpus: sentence-level BLEU averaged over hypotheses.

    Each hypothesis is scored against the same ``num_references`` references (Texygen / Caccia et al.):
    uniform weights over orders 1..n, counts clipped by the largest count in any one reference,
    brevity penalty against the closest reference length (ties: shorter), smoothing method 1
    (``BLEU_SMOOTHING_EPSILON``). BLEU grows with the number of references, so that number is a
    required argument rather than "all of them": scores are only comparable at equal counts.
    References are a ``seed``-ed sample of ``num_references`` (``seed=None``: the first ones).
    """
    _check_bleu_args(len(hypotheses), n, num_references, len(references), num_references)
    pool = _select_pool(len(references), num_references, seed)
    stats = _ReferenceStats([references[i] for i in pool], n)
    scores = [_sentence_bleu(h, stats, n, exclude=-1, exclude_len=None) for h in hypotheses]
    return float(np.mean(scores))


def self_bleu(sentences: Sequence[Sentence], n: int = 4, *, num_references: int, seed: int | None = 0) -> float:
    """Self-BLEU-n: how much each generated sentence resembles the others (higher = less diverse).

    Every sentence is a hypothesis, scored as in ``bleu`` against exactly ``num_references`` OTHER
    sentences. A pool of ``num_references + 1`` sentences is chosen (``seed``-ed sample, or the first
    ones if ``seed`` is None); a pool member uses the rest of the pool, excluded by *index* so a
    duplicate of it elsewhere still counts as a reference; every other sentence uses the pool minus
    its last member.
    """
    _check_bleu_args(len(sentences), n, num_references, len(sentences), num_references + 1)
    pool = _select_pool(len(sentences), num_references + 1, seed)
    refs = [sentences[i] for i in pool]
    stats = _ReferenceStats(refs, n)
    pool_position = {sentence_idx: position for position, sentence_idx in enumerate(pool)}
    scores = []
    for idx, hyp in enumerate(sentences):
        excluded = pool_position.get(idx, num_references)
        scores.append(_sentence_bleu(hyp, stats, n, exclude=excluded, exclude_len=len(refs[excluded])))
    return float(np.mean(scores))


def perplexity(nll_sum: float, num_tokens: int) -> float:
    """exp(mean negative log-likelihood per token, in nats); ``inf`` when that overflows a float,
    so a diverged run compares above any threshold instead of raising."""
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}")
    try:
        return math.exp(nll_sum / num_tokens)
    except OverflowError:
        return math.inf
