"""`rnnwatch evaluate`: detection quality of train + score on labeled corpora (NAB layout), scored with NAB v1.1.

Needs the training side (the ``[export]`` extra) because every series is trained on its own probationary
rows; scoring goes through the runtime's own offline path.
"""

from rnnwatch.evaluate.nab import PROFILES, optimise_threshold, score_at_threshold

__all__ = ["PROFILES", "optimise_threshold", "score_at_threshold"]
