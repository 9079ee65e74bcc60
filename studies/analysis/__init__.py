"""Robustness analysis: pure functions from trial records to the report of ROBUSTNESS.md."""
