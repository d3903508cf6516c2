"""Evaluation metrics: pure numpy/scipy functions (functional), torchmetrics classes (streaming,
lm), and the per-patient sufficient statistics behind ``ehrgen.evaluate`` (cohort_arrays,
fidelity, conditioning, validity, utility). Definitions: docs/metrics.md."""
