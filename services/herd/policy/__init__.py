"""Choosing what to run, and the one home of what it chooses: policies as text, offline replay,
calibration with a guarantee, confidence maps, job budgets, the router (router/).

The core is pure: it imports only the standard library, numpy, scipy (guarantee.py: exact binomial
tails), scikit-learn (confidence.py only), pydantic and PyYAML. Beside it, the modules that meet the
ledger: policy and router versions (versions.py, router/versions.py, what they share in versioned.py),
the rule each worker runs from the active version (active.py), a calibration job read as arrays
(calibration.py, audit_calibration.py) and the release of a budget job's held prompts (job_budget.py).
"""
