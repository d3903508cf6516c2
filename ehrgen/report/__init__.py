"""Evaluation report: matplotlib figures and the self-contained HTML page."""
