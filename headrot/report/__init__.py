"""Figures and summaries written under <root>/report/: mean faces, contact sheets."""
