"""Synthetic traffic: the operator's own requests to a canary during its analysis."""
