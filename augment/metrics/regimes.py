"""The names of the downstream verdict, shared by evaluation and the promotion policy (no torch).

``REGIMES`` are the ways a classifier is trained (:mod:`augment.metrics.downstream`); the GAN
regimes are the ones a verdict and the promotion gate judge; a verdict needs ``MIN_VERDICT_SEEDS``
seeds: with 2, a t-interval has one degree of freedom and two equal deltas (common on a small test
split, where accuracy moves in steps of 1/n) give a zero-width "significant" interval.
"""

from __future__ import annotations

#: The generator as users deploy it (:mod:`augment.augmenter`), each measured as a regime of its own:
#: ``gan-augmenter`` is ``AugmentedDataset(train, GanAugmenter(p=synthetic_share))`` (each real image
#: replaced with probability p by a synthetic image of its class); ``balanced-dataset`` is
#: ``BalancedDataset(train, augmenter)`` (the real images plus synthetic ones topping every class up
#: to the largest, drawn uniformly). Neither adds classic augmentation: they are the GAN alone.
DEPLOYED_REGIMES = ("gan-augmenter", "balanced-dataset")
REGIMES = ("real", "real+classic", "real+gan", "real+gan+classic", "gan-only", *DEPLOYED_REGIMES)
#: The regimes whose batches take ``synthetic_share`` from the synthetic pool, beside real images
#: (and end their synthetic draws at ``synthetic_until``).
SHARE_REGIMES = ("real+gan", "real+gan+classic")
BASELINE = "real+classic"
#: The regimes a verdict and the promotion gate judge (the first is the one tuning runs).
GAN_REGIMES = ("real+gan+classic", "real+gan", *DEPLOYED_REGIMES)
#: The verdict is read on balanced accuracy (equal to accuracy on a balanced test split).
VERDICT_METRIC = "balanced_accuracy"
MIN_VERDICT_SEEDS = 3
