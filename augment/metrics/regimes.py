"""The names of the downstream verdict, shared by evaluation and the promotion policy (no torch).

``REGIMES`` are the ways a classifier is trained (:mod:`augment.metrics.downstream`); the GAN
regimes are the ones a verdict and the promotion gate judge; a verdict needs ``MIN_VERDICT_SEEDS``
seeds: with 2, a t-interval has one degree of freedom and two equal deltas (common on a small test
split, where accuracy moves in steps of 1/n) give a zero-width "significant" interval.
"""

from __future__ import annotations

REGIMES = ("real", "real+classic", "real+gan", "real+gan+classic", "gan-only")
BASELINE = "real+classic"
GAN_REGIMES = ("real+gan+classic", "real+gan")
#: The verdict is read on balanced accuracy (equal to accuracy on a balanced test split).
VERDICT_METRIC = "balanced_accuracy"
MIN_VERDICT_SEEDS = 3
