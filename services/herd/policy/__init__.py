"""Choosing what to run: policies as text, offline replay, calibration, confidence maps, job budgets.

Pure: imports only the standard library, numpy, scikit-learn (confidence.py only), pydantic and PyYAML.
"""
