"""One sparse vector per patient: binary code sets (Jaccard) and TF-IDF bags of codes (cosine)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ehrgen.metrics.cohort_arrays import CohortArrays, code_counts


def binary_vectors(arr: CohortArrays) -> sp.csr_matrix:
    """``[n, V]`` float32 CSR: 1 where the patient carries the code in any visit."""
    m = code_counts(arr).astype(np.float32)
    m.data[:] = 1.0
    return m


def smooth_idf(train: sp.csr_matrix) -> np.ndarray:
    """``ln((1 + N) / (1 + df)) + 1`` per code from the train split's patients (never zero)."""
    n = train.shape[0]
    df = np.bincount(train.indices, minlength=train.shape[1])
    return (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)


def tfidf_vectors(arr: CohortArrays, idf: np.ndarray) -> sp.csr_matrix:
    """``[n, V]`` float32 CSR: visits-holding-code counts times IDF, rows scaled to unit L2 norm."""
    m = code_counts(arr).astype(np.float32)
    m.data *= idf[m.indices]
    norms = np.sqrt(np.asarray(m.multiply(m).sum(1)).ravel())
    m.data /= np.repeat(np.where(norms > 0, norms, 1.0), np.diff(m.indptr)).astype(np.float32)
    return m
