"""Mean-field theory of signal propagation in a deep fully connected net at initialisation.

Weights N(0, sigma_w^2 / fan_in), biases N(0, sigma_b^2); in the wide limit a pre-activation h of
layer l is Gaussian with variance q_l, propagated by the length map (Poole et al. 2016)

    q_(l+1) = sigma_w^2 E_z[phi(sqrt(q_l) z)^2] + sigma_b^2,        z ~ N(0, 1),

and the backward signal delta_l = dL/dh_l shrinks or grows by (Schoenholz et al. 2017)

    E||delta_l||^2 = chi(q_l) E||delta_(l+1)||^2,    chi(q) = sigma_w^2 E_z[phi'(sqrt(q) z)^2].

chi_1 is chi at the fixed point q* of the length map: below 1 gradients vanish, above 1 they
explode, geometrically, over the depth scale xi = -1 / ln chi_1. ``profile`` predicts a finite
network layer by layer from its actual input, which is what a measurement at depth 20 is
compared with (the fixed point is not reached in a few layers). Measure it on dL/dh (the
``backprop`` probe), not on weight gradients: those are delta_l times the layer's input, and with
ReLU the input grows by exactly what delta loses, so they stay flat whatever sigma_w.

Two inputs' correlation c follows the correlation map; its slope chi_c at the stable fixed point c*
sets the depth xi_c = -1 / ln chi_c over which information about the input survives, and
Schoenholz et al. (2017, Fig. 5) find nets trainable up to about 6 xi_c. On the ordered side
(chi_1 < 1, c* = 1) chi_c = chi_1; on the chaotic side xi_c is the longer one.

Expectations use Gauss-Hermite quadrature (201 nodes in 1-D; a 121 x 121 product rule in 2-D, good
to ~1e-4 at the lengths q* < 10 met here); piecewise-linear activations use their closed forms.
No torch: the reporter imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(201)  # probabilists' Hermite: weight exp(-z^2/2)
_WEIGHTS = _WEIGHTS / math.sqrt(2 * math.pi)  # so sum(w f(z)) = E[f(z)], z ~ N(0, 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(x / 2))


# phi and phi' for the activations of deep_mlp
ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
    "leaky_relu": (lambda x: np.where(x > 0, x, 0.01 * x), lambda x: np.where(x > 0, 1.0, 0.01)),
    "identity": (lambda x: x, lambda x: np.ones_like(x)),
}


def _phi(activation: str) -> tuple[Callable, Callable]:
    if activation not in ACTIVATIONS:
        raise ValueError(f"mean-field theory has no activation '{activation}'; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[activation]


def gauss(f: Callable[[np.ndarray], np.ndarray], q: float) -> float:
    """E[f(sqrt(q) z)] for z ~ N(0, 1)."""
    return float(np.dot(_WEIGHTS, f(math.sqrt(max(q, 0.0)) * _NODES)))


def length_map(q: float, activation: str, sigma_w: float, sigma_b: float = 0.0) -> float:
    phi, _ = _phi(activation)
    if activation in _PIECEWISE_LINEAR:
        return sigma_w**2 * _PIECEWISE_LINEAR[activation] * q + sigma_b**2
    return sigma_w**2 * gauss(lambda h: phi(h) ** 2, q) + sigma_b**2


# piecewise-linear activations: E[phi(h)^2] = c q and E[phi'(h)^2] = c exactly, for every q > 0
# (quadrature would stumble on the kink at 0)
_PIECEWISE_LINEAR = {"relu": 0.5, "leaky_relu": (1 + 0.01**2) / 2, "identity": 1.0}


def chi(q: float, activation: str, sigma_w: float) -> float:
    """sigma_w^2 E[phi'(h)^2], h ~ N(0, q): the factor on E||delta||^2 per layer."""
    _, dphi = _phi(activation)
    if activation in _PIECEWISE_LINEAR:
        return sigma_w**2 * _PIECEWISE_LINEAR[activation]
    return sigma_w**2 * gauss(lambda h: dphi(h) ** 2, q)


def fixed_point(activation: str, sigma_w: float, sigma_b: float = 0.0, q0: float = 1.0, tol: float = 1e-12) -> float:
    """The fixed point q* of the length map that q flows to from any q_0 > 0.

    Piecewise-linear maps are q -> c sigma_w^2 q + sigma_b^2: q* = sigma_b^2 / (1 - c sigma_w^2) when
    c sigma_w^2 < 1, ``inf`` (no finite fixed point: q grows without bound, e.g. ReLU with
    sigma_w^2 > 2) above, and ``q0`` itself at c sigma_w^2 = 1 with sigma_b = 0 (every q is fixed; ``q0`` is used
    for nothing else).
    Their chi does not depend on q, so chi_1 is defined anyway.

    Bounded activations (tanh, sigmoid) have E[phi^2] <= 1, so q* lies in [sigma_b^2, sigma_w^2 +
    sigma_b^2]. Plain iteration slows down without end at the critical point (tanh, sigma_w = 1:
    q_l ~ 3 / (2 l)), so q* is found as the sign change of map(q) - q instead: from positive to
    negative is a stable fixed point, located by bisection to ``tol``; with none (ordered tanh
    without bias) q flows to 0."""
    if activation in _PIECEWISE_LINEAR:
        slope = sigma_w**2 * _PIECEWISE_LINEAR[activation]
        if slope < 1:
            return sigma_b**2 / (1 - slope)
        return q0 if slope == 1 and sigma_b == 0 else math.inf
    top = sigma_w**2 + sigma_b**2  # map(q) <= top for |phi| <= 1
    grid = np.concatenate([[0.0], np.geomspace(1e-9, top * 1.01 + 1e-9, 400)])
    gap = np.array([length_map(q, activation, sigma_w, sigma_b) - q for q in grid])
    down = np.flatnonzero((gap[:-1] > 0) & (gap[1:] <= 0))
    if not len(down):
        return 0.0  # map(q) <= q everywhere: q dies out (g(0) = 0 needs sigma_b = 0 and phi(0) = 0)
    lo, hi = grid[down[-1]], grid[down[-1] + 1]
    while hi - lo > tol * max(hi, 1e-300):
        mid = 0.5 * (lo + hi)
        if length_map(mid, activation, sigma_w, sigma_b) - mid > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def chi1(activation: str, sigma_w: float, sigma_b: float = 0.0) -> float:
    """chi at the fixed point q* (for piecewise-linear maps, whose chi is the same at every q > 0,
    that constant, also where q* is infinite: ReLU with sigma_w^2 > 2)."""
    if activation in _PIECEWISE_LINEAR:
        return chi(1.0, activation, sigma_w)
    return chi(fixed_point(activation, sigma_w, sigma_b), activation, sigma_w)


def depth_scale(chi_1: float) -> float:
    """xi = 1 / |ln chi_1| layers over which the gradient changes e-fold (Schoenholz et al. 2017:
    -1 / ln chi_1 on the ordered side); infinite at the critical chi_1 = 1."""
    return math.inf if chi_1 == 1.0 else 1.0 / abs(math.log(chi_1))


_N2, _W2 = np.polynomial.hermite_e.hermegauss(121)  # a rule of its own for the 2-D expectations
_Z1, _Z2 = (a.ravel() for a in np.meshgrid(_N2, _N2, indexing="ij"))
_W2 = np.outer(_W2, _W2).ravel() / (2 * math.pi)


def _gauss2(f: Callable, g: Callable, q: float, c: float) -> float:
    """E[f(u1) g(u2)] for (u1, u2) Gaussian with variances q and correlation c."""
    u1 = math.sqrt(q) * _Z1
    u2 = math.sqrt(q) * (c * _Z1 + math.sqrt(max(1 - c * c, 0.0)) * _Z2)
    return float(np.dot(_W2, f(u1) * g(u2)))


def correlation_map(c: float, activation: str, sigma_w: float, sigma_b: float = 0.0, q: float | None = None) -> float:
    """c_(l+1) = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q for two inputs of length q (by
    default the fixed point q*) with correlation c (Poole et al. 2016, eq. 5)."""
    phi, _ = _phi(activation)
    q = fixed_point(activation, sigma_w, sigma_b) if q is None else q
    return (sigma_w**2 * _gauss2(phi, phi, q, c) + sigma_b**2) / q


def chi_c(activation: str, sigma_w: float, sigma_b: float = 0.0) -> float:
    """The slope of the correlation map at its stable fixed point c*, sigma_w^2 E[phi'(u1) phi'(u2)]
    (Schoenholz et al. 2017, eq. 7). In the ordered phase (chi_1 <= 1) c* = 1 and chi_c = chi_1. In
    the chaotic phase c* < 1 is the stable fixed point (0 for tanh without bias), found as the sign
    change of map(c) - c below 1 that lies closest to 1. Piecewise-linear activations have a
    correlation map that does not depend on sigma_w, with c* = 1 and slope 1: chi_c = 1."""
    if activation in _PIECEWISE_LINEAR:
        return 1.0
    chi_1 = chi1(activation, sigma_w, sigma_b)
    if chi_1 <= 1.0:
        return chi_1
    q = fixed_point(activation, sigma_w, sigma_b)
    _, dphi = _phi(activation)
    if sigma_b == 0 and activation in _ODD:  # the map is odd, so c* = 0 and u1, u2 are independent
        return sigma_w**2 * gauss(dphi, q) ** 2
    grid = np.linspace(-1.0, 1.0 - 1e-6, 21)
    gap = np.array([correlation_map(c, activation, sigma_w, sigma_b, q) - c for c in grid])
    down = np.flatnonzero((gap[:-1] > 0) & (gap[1:] <= 0))
    lo, hi = grid[down[-1]], grid[down[-1] + 1]
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if correlation_map(mid, activation, sigma_w, sigma_b, q) - mid > 0 else (lo, mid)
    return sigma_w**2 * _gauss2(dphi, dphi, q, 0.5 * (lo + hi))


_ODD = ("tanh",)  # odd activations with a bounded map (identity is piecewise linear)


def correlation_depth_scale(activation: str, sigma_w: float, sigma_b: float = 0.0) -> float:
    """xi_c = -1 / ln chi_c: the depth over which two inputs' correlation approaches its fixed point.
    Schoenholz et al. (2017, Fig. 5) find networks trainable up to about 6 xi_c. On the ordered side
    xi_c = -1 / ln chi_1 = ``depth_scale(chi1(...))``; on the chaotic side xi_c is longer than
    1 / ln chi_1 (tanh, sigma_w = 3: 6 xi_c ~ 29 layers, 6 / ln chi_1 ~ 10)."""
    value = chi_c(activation, sigma_w, sigma_b)
    return math.inf if value >= 1.0 else -1.0 / math.log(value)


def profile(activation: str, sigma_w: float, q_input: float, depth: int, sigma_b: float = 0.0) -> np.ndarray:
    """Predicted log10 ||delta_l|| - log10 ||delta_L|| for hidden layers l = 1..depth (L = depth).

    The first pre-activation has q_1 = sigma_w^2 q_input + sigma_b^2 (q_input: the input's mean
    squared entry); then q_(l+1) follows the length map, and each layer below L adds
    0.5 log10 chi(q_l)."""
    qs = [sigma_w**2 * q_input + sigma_b**2]
    for _ in range(depth - 1):
        qs.append(length_map(qs[-1], activation, sigma_w, sigma_b))
    steps = np.array([0.5 * math.log10(chi(q, activation, sigma_w)) for q in qs[:-1]])  # layers 1..L-1
    return np.append(np.cumsum(steps[::-1])[::-1], 0.0)


def batchnorm_relu_growth() -> float:
    """Decades per layer by which the backward signal of a batch-normalised ReLU net grows towards
    the input at initialisation: 1/2 log10(pi / (pi - 1)) = 0.0832. Yang, Pennington, Rao,
    Sohl-Dickstein & Schoenholz (2019), A mean field theory of batch normalization, Sec. 3: each
    layer multiplies E||dL/dh||^2 by pi / (pi - 1) for ReLU in the wide, large-batch limit, whatever
    the weight variance (batch norm removes the weights' scale), so the explosion is batch norm's own."""
    return 0.5 * math.log10(math.pi / (math.pi - 1))


def relu_dead_probability(depth: int, width: int) -> float:
    """The probability that a ReLU net with ``depth`` hidden layers of ``width`` units, weights drawn
    from any distribution symmetric about 0 and zero biases, has a hidden layer whose units are all at
    0 for a given input x != 0, so that its output does not depend on x there: 1 - (1 - 2^-width)^depth.
    Exact: given a nonzero input h to a layer, its units' pre-activations w_j . h are independent
    (independent rows) and each is <= 0 with probability 1/2 (symmetric, no atom at 0), so the layer is
    all at 0 with probability 2^-width and otherwise passes on a nonzero h. A net that is constant on
    a set of inputs (born dead there: Lu, Shin, Su & Karniadakis 2019, Dying ReLU and initialization)
    is dead at each of them, so this bounds the chance of being born dead on any set of inputs from
    above; it tends to 1 with depth at fixed width. Checked against simulation in tests/test_meanfield.py."""
    return 1.0 - (1.0 - 0.5**width) ** depth


def relu_jacobian_log_variance(depth: int, width: int, n_in: int) -> float:
    """Var of ln ||J(x)^T u||^2 over He-initialised ReLU nets (weights N(0, 2/fan_in) including the
    head, biases 0) and inputs x, for a fixed unit output direction u: ``depth`` hidden layers of
    ``width`` units on ``n_in`` inputs. Finite-width theory behind Hanin (2018), Which neural net
    architectures give rise to exploding and vanishing gradients?: going back from u the head gives
    (2/n) chi^2_n; each hidden layer keeps the K ~ Bin(n, 1/2) active units' share of the signal, a
    Beta(K/2, (n-K)/2) fraction, and its weights' transpose multiplies by (2/fan_in) chi^2_fan_in.
    The factors are independent, so the log-variances add: psi_1(n/2) for the head; per hidden layer
    E[psi_1(K/2) - psi_1(n/2)] + Var[psi(K/2)] + psi_1(fan_in/2) (psi, psi_1: digamma, trigamma;
    K = 0, a dead layer, is left out). For wide layers a layer adds ~5/n, the 1 + 5/n per layer of
    E[X^2]/E[X]^2 with X = (2/n) chi^2_K: the variance is set by beta = sum of 1/width over hidden
    layers, not by depth alone. Checked against simulation in tests/test_meanfield.py."""
    from scipy.special import digamma, polygamma
    from scipy.stats import binom

    k = np.arange(1, width + 1)
    p = binom.pmf(k, width, 0.5)
    p = p / p.sum()
    mask = float((p * (polygamma(1, k / 2) - polygamma(1, width / 2))).sum())
    mask += float((p * digamma(k / 2) ** 2).sum() - (p * digamma(k / 2)).sum() ** 2)
    fans = [n_in] + [width] * (depth - 1)
    return float(polygamma(1, width / 2)) + sum(mask + float(polygamma(1, f / 2)) for f in fans)


def jacobian_spectrum_variance(
    activation: str, sigma_w: float, q_input: float, depth: int, orthogonal: bool, sigma_b: float = 0.0
) -> float:
    """Normalised variance E[lambda^2] / E[lambda]^2 - 1 of the squared singular values lambda of the
    input-output Jacobian J = D_L W_L ... D_1 W_1 of a wide net at initialisation (D_l = diag phi'(h_l)),
    in the spirit of Pennington, Schoenholz & Ganguli (2017): the factors are asymptotically free, and
    for free factors of unit mean the normalised variances add. W_l^T W_l of a square Gaussian layer
    has the Marchenko-Pastur variance 1, an orthogonal one 0; D_l^2 adds mu_2 / mu_1^2 - 1 with
    mu_k = E[phi'(h)^(2k)], h ~ N(0, q_l) from the length map (ReLU: 1 a layer, whatever q). So a
    Gaussian net spreads by at least one per layer, a ReLU net by one per layer even with orthogonal
    weights, and an orthogonal tanh net only as much as its nonlinearity is used (q_l -> 0 at
    sigma_w = 1, sigma_b = 0: dynamical isometry). The wide-width limit: at width 64 a product of 80
    Gaussian layers spreads further (finite-width corrections compound); the report shows how far."""
    _, dphi = _phi(activation)
    qs = [sigma_w**2 * q_input + sigma_b**2]
    for _ in range(depth - 1):
        qs.append(length_map(qs[-1], activation, sigma_w, sigma_b))
    total = 0.0
    for q in qs:
        if activation in _PIECEWISE_LINEAR:  # phi'^2 is 0 or c: mu_2 / mu_1^2 = 1 / P(phi' != 0) (ReLU: 2)
            ratio = 2.0 if activation == "relu" else gauss(lambda h: dphi(h) ** 4, q) / chi(q, activation, 1.0) ** 2
        else:
            ratio = gauss(lambda h: dphi(h) ** 4, q) / gauss(lambda h: dphi(h) ** 2, q) ** 2
        total += (0.0 if orthogonal else 1.0) + ratio - 1.0
    return total
