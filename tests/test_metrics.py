"""Evaluation metrics on hand-computed tiny corpora, and the PNG plots."""

import math

import matplotlib.image
import numpy as np
import pytest

from maskgan_rl.metrics import (
    bleu,
    perplexity,
    self_bleu,
    unique_ngram_fraction,
    validation_ngram_overlap,
)
from maskgan_rl.plots import (
    plot_quality_diversity,
    plot_training_curves,
    quality_diversity_figure,
    save_figure,
    training_curves_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def toks(text: str) -> list[str]:
    return text.split()


# ---------------------------------------------------------------- unique n-grams


def test_unique_ngram_fraction_on_repetitive_corpus():
    corpus = [toks("a b a b"), toks("a b c")]
    # bigrams: (ab, ba, ab) + (ab, bc) = 5 occurrences, distinct {ab, ba, bc} = 3 -> 60%.
    # (Had n-grams crossed the sentence boundary, an extra "b a" would make it 3/6 = 50%.)
    assert unique_ngram_fraction(corpus, 2) == pytest.approx(60.0)
    # unigrams: 7 tokens, distinct {a, b, c} = 3 -> 300/7 %.
    assert unique_ngram_fraction(corpus, 1) == pytest.approx(300 / 7)
    # trigrams: aba, bab, abc all distinct -> 100%.
    assert unique_ngram_fraction(corpus, 3) == pytest.approx(100.0)


def test_unique_ngram_fraction_without_ngrams_raises():
    with pytest.raises(ValueError, match="no 5-grams"):
        unique_ngram_fraction([toks("a b c")], 5)


# ---------------------------------------------------------------- validation overlap


def test_validation_overlap_geometric_mean():
    generated = [toks("a b c a b")]
    reference = [toks("a b c"), toks("x a b")]  # bigrams {ab, bc, xa}, trigrams {abc, xab}
    # generated bigrams ab, bc, ca, ab (4): distinct found {ab, bc} = 2 -> 2/4; occurrences found 3 -> 3/4.
    # generated trigrams abc, bca, cab (3): found {abc} -> 1/3 either way.
    # distinct (the authors' code): sqrt(1/2 * 1/3) = sqrt(1/6); occurrences: sqrt(3/4 * 1/3) = 1/2.
    assert validation_ngram_overlap(generated, reference, ns=(2, 3)) == pytest.approx(math.sqrt(1 / 6))
    assert validation_ngram_overlap(generated, reference, ns=(2, 3), count_distinct=False) == pytest.approx(0.5)


def test_validation_overlap_is_zero_when_one_order_never_matches():
    # The references have no 4-grams at all, so the 4-gram share is 0 and so is the geometric mean.
    assert validation_ngram_overlap([toks("a b c a b")], [toks("a b c")], ns=(2, 4)) == 0.0


# ---------------------------------------------------------------- BLEU


def test_bleu_is_one_for_identical_sentences():
    sentences = [toks("the cat sat on the mat"), toks("a dog ran off")]
    # Each hypothesis has a reference equal to itself: every precision 1, closest length = own length.
    assert bleu(sentences, sentences, n=4, num_references=2) == pytest.approx(1.0)


def test_bleu_brevity_penalty_on_short_hypothesis():
    # p1 = 2/2, p2 = 1/1, but c = 2 < r = 6: BP = exp(1 - 6/2) = exp(-2).
    score = bleu([toks("the cat")], [toks("the cat sat on the mat")], n=2, num_references=1)
    assert score == pytest.approx(math.exp(-2))


def test_bleu2_clips_counts_per_reference_and_averages_sentences():
    references = [toks("the cat is here"), toks("the the dog x")]
    clipped = toks("the the the cat")
    # Unigrams: the x3 clipped to 2 (most in ONE reference), cat 1 -> p1 = 3/4 (summing over references would give 4/4).
    # Bigrams: "the the" x2 clipped to 1, "the cat" 1 -> p2 = 2/3. Lengths all 4 -> BP = 1.
    # BLEU-2 = sqrt(3/4 * 2/3) = sqrt(1/2); the second hypothesis equals a reference -> 1.
    assert bleu([clipped], references, n=2, num_references=2) == pytest.approx(math.sqrt(0.5))
    averaged = bleu([clipped, references[0]], references, n=2, num_references=2)
    assert averaged == pytest.approx((math.sqrt(0.5) + 1) / 2)


def test_bleu_smoothing_of_a_missing_order_and_zero_without_unigram_match():
    # p1 = 2/4 (a, c); bigrams ab, bc, cd all unmatched -> smoothed 0.1 / 3. BLEU-2 = sqrt(1/2 * 1/30) = sqrt(1/60).
    score = bleu([toks("a b c d")], [toks("a x c y")], n=2, num_references=1)
    assert score == pytest.approx(math.sqrt(1 / 60))
    assert bleu([toks("z")], [toks("a x c y")], n=2, num_references=1) == 0.0


def test_bleu_uses_exactly_num_references():
    hypotheses = [toks("a b")]
    references = [toks("x y"), toks("a b")]
    # seed=None takes the first references: only "x y" -> no match -> 0; both -> exact match -> 1.
    assert bleu(hypotheses, references, n=2, num_references=1, seed=None) == 0.0
    assert bleu(hypotheses, references, n=2, num_references=2, seed=None) == 1.0
    # Appended references are never used, so the score does not drift with the reference-set size.
    assert bleu(hypotheses, references + [toks("a b")] * 3, n=2, num_references=1, seed=None) == 0.0
    with pytest.raises(ValueError, match="num_references=3"):
        bleu(hypotheses, references, n=2, num_references=3)


def test_bleu_seeded_sample_has_the_fixed_size_and_is_deterministic():
    # Ten distinct one-token sentences scored against themselves with BLEU-1: a hypothesis scores 1 iff
    # it is among the sampled references, else 0; so the mean is exactly num_references / 10 for any seed.
    sentences = [[f"t{i}"] for i in range(10)]
    for seed in (0, 1, 7):
        assert bleu(sentences, sentences, n=1, num_references=3, seed=seed) == pytest.approx(0.3)
    per_seed = [bleu(sentences[:1], sentences, n=1, num_references=3, seed=s) for s in range(10)]
    assert per_seed == [bleu(sentences[:1], sentences, n=1, num_references=3, seed=s) for s in range(10)]
    assert set(per_seed) == {0.0, 1.0}  # the seed does change which references are drawn


# ---------------------------------------------------------------- Self-BLEU


def test_self_bleu_excludes_the_sentence_itself_by_index():
    corpus = [toks("a b c d"), toks("a b c d"), toks("e f g h"), toks("i j k l")]
    # Each duplicate keeps its twin (other index, same value) as a reference -> 1; the distinct ones share
    # no token with any other sentence -> 0. Mean (1 + 1 + 0 + 0) / 4 = 0.5.
    # (Excluding by value would give 0; not excluding at all would give 1.)
    assert self_bleu(corpus, n=2, num_references=3, seed=None) == pytest.approx(0.5)


def test_self_bleu_fixed_reference_count():
    corpus = [toks("a b"), toks("c d"), toks("e f"), toks("e f")]
    # num_references=2, seed=None: pool = sentences 0..2. Pool members use the other two pool members;
    # sentence 3 uses the pool minus its last member = {0, 1}, so it never sees its twin (2): all score 0.
    assert self_bleu(corpus, n=2, num_references=2, seed=None) == 0.0
    # num_references=3: pool = all; the twins 2 and 3 now see each other -> (0 + 0 + 1 + 1) / 4.
    assert self_bleu(corpus, n=2, num_references=3, seed=None) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="num_references=4"):
        self_bleu(corpus, n=2, num_references=4)


# ---------------------------------------------------------------- perplexity


def test_perplexity():
    assert perplexity(5 * math.log(10), 5) == pytest.approx(10.0)
    assert perplexity(0.0, 3) == 1.0
    assert perplexity(1e6, 1) == math.inf  # diverged: comparable with a threshold, not an OverflowError
    with pytest.raises(ValueError, match="num_tokens"):
        perplexity(1.0, 0)


# ---------------------------------------------------------------- plots


def _assert_png_of(path, figure, other_figure):
    """`path` is a PNG of `figure`, pixel for pixel (whose contents the figure tests check), and not of
    `other_figure` (other data), so the comparison can tell figures apart."""
    assert path.read_bytes().startswith(PNG_MAGIC)
    written = matplotlib.image.imread(path)
    expected = matplotlib.image.imread(save_figure(figure, path.with_name("expected.png")))
    other = matplotlib.image.imread(save_figure(other_figure, path.with_name("other.png")))
    assert written.shape == expected.shape and np.array_equal(written, expected)
    assert written.shape != other.shape or not np.array_equal(written, other)


def test_plot_quality_diversity_writes_png(tmp_path):
    curves = {
        "mle": [{"temperature": t, "nll_oracle": 9 - t, "reverse_nll": 5 + t} for t in (1.0, 0.7, 1.3)],
        "maskgan": [{"temperature": t, "nll_oracle": 8 - t, "reverse_nll": 6 + t} for t in (0.7, 1.0)],
    }
    out = plot_quality_diversity(curves, x="nll_oracle", y="reverse_nll", path=tmp_path / "sub" / "qd.png")
    assert out == tmp_path / "sub" / "qd.png"
    _assert_png_of(out, quality_diversity_figure(curves, x="nll_oracle", y="reverse_nll"),
                   quality_diversity_figure(curves, x="reverse_nll", y="nll_oracle"))


def test_quality_diversity_figure_joins_each_models_points_in_temperature_order():
    curves = {
        "mle": [{"temperature": t, "nll_oracle": 9 - t, "reverse_nll": 5 + t} for t in (1.0, 0.7, 1.3)],
        "maskgan": [{"temperature": t, "nll_oracle": 8 - t, "reverse_nll": 6 + t} for t in (1.0, 0.7)],
    }
    ax = quality_diversity_figure(curves, x="nll_oracle", y="reverse_nll", x_better="low", y_better="high").axes[0]
    mle, maskgan = ax.get_lines()
    assert mle.get_label() == "mle" and maskgan.get_label() == "maskgan"
    assert list(mle.get_xdata()) == pytest.approx([8.3, 8.0, 7.7])  # T = 0.7, 1.0, 1.3
    assert list(mle.get_ydata()) == pytest.approx([5.7, 6.0, 6.3])
    assert list(maskgan.get_xdata()) == pytest.approx([7.3, 7.0])
    assert sorted(t.get_text() for t in ax.texts) == ["T=0.7", "T=0.7", "T=1", "T=1", "T=1.3"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("nll_oracle", "reverse_nll")
    assert "upper-left is better" in ax.get_title()
    # The real text's point: a star where its metrics put it (a reference without the axes' keys draws nothing).
    real = {"nll_oracle": 6.5, "reverse_nll": 5.5}
    ax = quality_diversity_figure(curves, x="nll_oracle", y="reverse_nll", reference=real).axes[0]
    (star,) = [line for line in ax.get_lines() if line.get_label() == "real text"]
    assert (list(star.get_xdata()), list(star.get_ydata()), star.get_marker()) == ([6.5], [5.5], "*")
    ax = quality_diversity_figure(curves, x="nll_oracle", y="reverse_nll", reference={"bleu4": 0.2}).axes[0]
    assert "real text" not in [line.get_label() for line in ax.get_lines()]


def test_plot_quality_diversity_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="`curves` is empty"):
        plot_quality_diversity({}, x="bleu", y="self_bleu", path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="lack the key 'bleu'"):
        plot_quality_diversity({"m": [{"temperature": 1.0}]}, x="bleu", y="self_bleu", path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="x_better"):
        plot_quality_diversity({"m": [{"temperature": 1.0, "a": 1, "b": 2}]}, "a", "b", tmp_path / "x.png", "up")
    assert not (tmp_path / "x.png").exists()


def test_plot_training_curves_writes_png(tmp_path):
    history = [{"iteration": i, "d_loss": 1 / (i + 1), "g_loss": i * 0.1} for i in range(5)]
    history[2]["eval_ppl"] = 80.0  # logged on some iterations only
    history[4]["eval_ppl"] = 70.0
    out = plot_training_curves(history, ["d_loss", "g_loss", "eval_ppl"], tmp_path / "train.png")
    _assert_png_of(out, training_curves_figure(history, ["d_loss", "g_loss", "eval_ppl"]),
                   training_curves_figure(history, ["d_loss", "eval_ppl", "g_loss"]))


def test_training_curves_figure_plots_each_metric_where_it_was_logged():
    history = [{"iteration": 10 + i, "d_loss": 1 / (i + 1)} for i in range(4)]
    history[1]["eval_ppl"] = 80.0
    history[3]["eval_ppl"] = 70.0
    axes = training_curves_figure(history, ["d_loss", "eval_ppl"]).axes
    assert [ax.get_ylabel() for ax in axes] == ["d_loss", "eval_ppl"]
    (d_loss,), (eval_ppl,) = (ax.get_lines() for ax in axes)
    assert list(d_loss.get_xdata()) == [10, 11, 12, 13]
    assert list(d_loss.get_ydata()) == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])
    assert list(eval_ppl.get_xdata()) == [11, 13] and list(eval_ppl.get_ydata()) == [80.0, 70.0]
    (by_position,) = training_curves_figure(history, ["d_loss"], x_key=None).axes[0].get_lines()
    assert list(by_position.get_xdata()) == [0, 1, 2, 3]


def test_plot_training_curves_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="`history` is empty"):
        plot_training_curves([], ["loss"], tmp_path / "t.png")
    with pytest.raises(ValueError, match="no record has the metric 'loss'"):
        plot_training_curves([{"iteration": 0, "other": 1.0}], ["loss"], tmp_path / "t.png")
    with pytest.raises(ValueError, match="lack 'iteration'"):
        plot_training_curves([{"loss": 1.0}], ["loss"], tmp_path / "t.png")
