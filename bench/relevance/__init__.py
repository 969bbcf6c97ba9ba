"""Relevance: the two towers against strong baselines on a global time split (see main)."""
