"""Choosing what to run: policies as text, offline replay, calibration with a guarantee, confidence
maps, job budgets.

Pure: imports only the standard library, numpy, scipy (guarantee.py: exact binomial tails),
scikit-learn (confidence.py only), pydantic and PyYAML.
"""
