"""The paper's baselines: STaR / Pair-SFT datasets (data.py) and the MBPP-R-style repair set (repair.py)."""
