"""A small multinomial logistic regression on sparse bag-of-codes features (numpy + scipy L-BFGS).

scikit-learn is not a dependency; this minimises the same objective as its
``LogisticRegression(C=C, multi_class="multinomial")``: sum of cross-entropies plus
``||W||^2 / (2 C)`` with an unpenalised intercept (divided by n here, which leaves the optimum
unchanged).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, in place (scipy.special.log_softmax is ~5x slower on tall arrays)."""
    z -= z.max(1, keepdims=True)
    z -= np.log(np.exp(z).sum(1, keepdims=True))
    return z


class LogisticRegression:
    """Softmax regression; ``classes_`` are the sorted labels seen in ``fit``."""

    def __init__(self, C: float = 1.0, max_iter: int = 200, tol: float = 1e-5):
        self.C, self.max_iter, self.tol = C, max_iter, tol
        self.classes_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None  # [d, k]
        self.intercept_: np.ndarray | None = None  # [k]

    def fit(self, X: sp.spmatrix | np.ndarray, y: np.ndarray) -> LogisticRegression:
        X = sp.csr_matrix(X, dtype=np.float64)
        self.classes_, yi = np.unique(np.asarray(y), return_inverse=True)
        n, d = X.shape
        k = len(self.classes_)
        if k < 2:
            raise ValueError("logistic regression needs at least two classes in y")
        rows = np.arange(n)
        onehot = np.zeros((n, k))
        onehot[rows, yi] = 1.0
        lam = 1.0 / (self.C * n)
        xt = X.T.tocsr()  # the gradient's product, in the layout sparse products are fastest in

        def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            W, b = theta[: d * k].reshape(d, k), theta[d * k :]
            logp = _log_softmax(np.asarray(X @ W) + b)
            loss = -logp[rows, yi].sum() / n + 0.5 * lam * np.vdot(W, W)
            resid = np.exp(logp)
            resid -= onehot
            resid /= n
            grad_w = np.asarray(xt @ resid) + lam * W
            return loss, np.r_[grad_w.ravel(), resid.sum(0)]

        res = minimize(
            loss_grad,
            np.zeros(d * k + k),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": self.tol},
        )
        self.coef_, self.intercept_ = res.x[: d * k].reshape(d, k), res.x[d * k :]
        return self

    def decision_function(self, X: sp.spmatrix | np.ndarray) -> np.ndarray:
        if self.coef_ is None:
            raise RuntimeError("fit the model first")
        return np.asarray(sp.csr_matrix(X, dtype=np.float64) @ self.coef_) + self.intercept_

    def predict_proba(self, X: sp.spmatrix | np.ndarray) -> np.ndarray:
        return np.exp(_log_softmax(self.decision_function(X)))

    def predict(self, X: sp.spmatrix | np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(1)]
