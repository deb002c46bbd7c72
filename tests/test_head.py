import pytest
import torch
import torch.nn.functional as F

from mixreorg_edge.head import VocabularyHead
from mixreorg_edge.vocab import Vocabulary

KINDS = {
    "background words": (["background", "cat", "dog", "car"], ["sky", "grass"], 0.0),
    "threshold": (["cat", "background", "dog", "car"], [], 0.4),
    "zero threshold": (["background", "cat", "dog"], [], 0.0),
    "no background": (["cat", "dog", "car"], [], 0.0),
}


def _head(kind: str) -> VocabularyHead:
    label_set, background_words, threshold = KINDS[kind]
    entries = len(label_set) - ("background" in label_set) + len(background_words)
    embeddings = F.normalize(torch.randn(entries, 8), dim=-1)
    return VocabularyHead(Vocabulary(label_set, background_words, embeddings, 10.0, threshold))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("integer_logits", [False, True])  # integer logits: many exact ties among the classes
def test_labels_are_the_argmax_of_the_label_scores(kind: str, integer_logits: bool) -> None:
    head = _head(kind)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, head.classifier.out_channels, 17, 19, generator=generator) * 3
    if integer_logits:
        logits = logits.round()
    labels = head.labels(logits)
    assert labels.dtype == torch.int64 and labels.shape == (2, 17, 19)
    assert torch.equal(labels, head.label_scores(logits).argmax(dim=1))
    if kind in ("background words", "threshold"):  # the rule is exercised: both background and foreground pixels
        assert (labels == head.background_index).any() and (labels != head.background_index).any()


def test_background_bias_is_a_log_prior_on_the_background_class() -> None:
    label_set, background_words, _ = KINDS["background words"]
    embeddings = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    dense = F.normalize(torch.randn(2, 8, 9, 11, generator=torch.Generator().manual_seed(2)), dim=1)

    def labels(bias: float) -> torch.Tensor:
        head = VocabularyHead(Vocabulary(label_set, background_words, embeddings, 10.0, background_bias=bias))
        return head.labels(head.logits(dense))

    plain_head = VocabularyHead(Vocabulary(label_set, background_words, embeddings, 10.0))
    logits = plain_head.logits(dense)
    best, best_index = logits[:, :3].max(dim=1)
    for bias in (-1.0, 0.5, 2.0):  # background wins where its words' total probability times e^bias beats the best
        expected = torch.where(logits[:, 3:].logsumexp(dim=1) + bias > best, 0, best_index + 1)
        assert torch.equal(labels(bias), expected)
    background = [(labels(bias) == 0).float().mean().item() for bias in (-50.0, -1.0, 0.0, 1.0, 50.0)]
    assert background == sorted(background) and background[0] == 0.0 and background[-1] == 1.0
    assert 0.0 < background[2] < 1.0


def test_shifting_computed_logits_equals_baking_the_bias_into_the_head() -> None:
    """Evaluation sweeps the background bias over logits computed once; deployed graphs carry it in the 1x1 conv's
    bias. Both must give the same logits."""
    label_set, background_words, _ = KINDS["background words"]
    embeddings = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(3)), dim=-1)
    dense = F.normalize(torch.randn(2, 8, 9, 11, generator=torch.Generator().manual_seed(4)), dim=1)
    plain = VocabularyHead(Vocabulary(label_set, background_words, embeddings, 10.0))
    for bias in (-2.5, 0.0, 6.5):
        baked = VocabularyHead(Vocabulary(label_set, background_words, embeddings, 10.0, background_bias=bias))
        torch.testing.assert_close(plain.shift_background(plain.logits(dense), bias), baked.logits(dense))
    no_words = _head("threshold")
    logits = torch.randn(1, no_words.classifier.out_channels, 3, 3)
    assert no_words.shift_background(logits, 0.0) is logits
    with pytest.raises(ValueError, match="needs background words"):
        no_words.shift_background(logits, 1.0)


# GroupViT's fixed-threshold rule by hand: 6 foreground classes a..f, 3 pixels, logits = log of these weights.
# Mean logits: f ln4/3, a ln2/3, b = c = d = e = 0, so the 5 kept classes are f, a, b, c, d (ties to the lower index)
# and e, the best class of pixel 3, is dropped. Scores = softmax over the kept x softmax over all:
#   pixel 1 (2, 1, 1, 1, 0.5, 4): all 9.5, kept 9 -> a 2/9.5 * 2/9, b c d 1/9.5 * 1/9, e 0, f 4/9.5 * 4/9 (best)
#   pixel 2 (uniform):            all 6,   kept 5 -> 1/30 each kept class, e 0 (best: a, the first)
#   pixel 3 (1, 1, 1, 1, 2, 1):   all 7,   kept 5 -> 1/35 each kept class, e 0 (best: a, the first)
# The image's best score is pixel 1's f, 16/85.5 = 0.187.
HAND_WEIGHTS = [[2, 1, 1, 1, 0.5, 4], [1] * 6, [1, 1, 1, 1, 2, 1]]
HAND_SCORES = [[4 / 85.5, 1 / 85.5, 1 / 85.5, 1 / 85.5, 0, 16 / 85.5], [1 / 30] * 4 + [0, 1 / 30],
               [1 / 35] * 4 + [0, 1 / 35]]


@pytest.mark.parametrize("threshold, expected, background", [
    (0.02, [6, 1, 1], [0, 0, 0]),  # every pixel reaches 0.02; pixel 3 is a, not its argmax e (not kept)
    (0.95, [6, 0, 0], [0, 1, 1]),  # 0.95 is capped at the image's best, 0.187: pixel 1 keeps f
])
def test_fixed_threshold_is_groupvits_rule_by_hand(
    threshold: float, expected: list[int], background: list[int]
) -> None:
    head = VocabularyHead(Vocabulary(["background", "a", "b", "c", "d", "e", "f"], [], torch.eye(6), 1.0, threshold))
    logits = torch.tensor(HAND_WEIGHTS).log().T[None, :, None, :]  # (1, 6, 1, 3)
    assert head.labels(logits)[0, 0].tolist() == expected
    scores = head.label_scores(logits)[0, :, 0]  # (7, 3): background first
    torch.testing.assert_close(scores[1:], torch.tensor(HAND_SCORES).T)
    assert scores[0].tolist() == background


def test_the_fixed_threshold_rule_takes_the_image_from_image_logits() -> None:
    """A band of an image's rows is labelled with the whole image's kept classes and capped threshold."""
    head = VocabularyHead(Vocabulary(["background", "cat", "dog"], [], torch.eye(2), 1.0, 0.99))
    logits = torch.randn(1, 2, 12, 10, generator=torch.Generator().manual_seed(5))  # best score < 0.99: the cap counts
    whole = head.labels(logits)
    assert torch.equal(head.labels(logits[:, :, 4:7], logits), whole[:, 4:7])
    assert not torch.equal(head.labels(logits[:, :, 4:7]), whole[:, 4:7])  # the band alone is another image
