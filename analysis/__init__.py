"""Timelines → pandas frames, metrics, findings and policy diff reports."""
