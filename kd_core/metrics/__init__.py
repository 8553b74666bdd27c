"""Metric tables: pairwise image metrics against the teacher, and paired statistics."""
