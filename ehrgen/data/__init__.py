"""Cohort data: raw sources, the cohort directory contract, vocabularies, tokenizers, batches."""
