"""polymoo harness: config, registry, data, models, weightings, buckets, trainers, tracking, evaluation, leaderboard."""

__version__ = "0.1.0"
