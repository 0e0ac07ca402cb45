"""Training: the SCoRe loop (score.py), the supervised baselines (sft.py) and what they share (common.py)."""
