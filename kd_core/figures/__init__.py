"""Figures: one style (style), metric plots (plots), image comparisons (comparisons)."""
