"""Sampling synthetic patients: requested demographics in, cohort / MIMIC-III / MEDS files out.

- ``demographics``: the (sex, age) distribution fitted on a training cohort, and the demographics a
  user asks for (fixed values or a CSV).
- ``writers``: a streaming, atomic writer of synthetic cohort directories (the same format
  ``prepare`` writes) and exporters of any cohort to MIMIC-III-style CSVs and to a MEDS dataset.
"""
