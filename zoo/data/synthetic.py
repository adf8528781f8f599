"""Synthetic time series for pre-training a zero-shot forecaster, in the spirit of Chronos's
KernelSynth (Ansari et al. 2024, "Chronos: Learning the Language of Time Series", Sec. 4.2: GP
draws from random sums and products of linear, RBF, periodic, rational-quadratic, white-noise
and constant kernels), sampled in O(L log L) instead of by Cholesky, plus the parametric parts
real series have that stationary kernels lack (change points, saturation, steps, spikes, counts).

Every series (L steps, float32) is a random composition of the parts below; each part is drawn
per series with its own probability (``SynthConfig`` field in brackets, default after ``=``).
Ranges marked log-U are sampled log-uniformly, U uniformly. Parts are scaled to unit standard
deviation (over the window, or exactly for the stationary draws) and then by an amplitude.

Trend [trend_prob=0.65; amplitude log-U trend_amplitude=(0.3, 3); random sign], time u = t / L:
  linear           u: the linear kernel (a GP draw with k(s, t) = s t is a random line).
  piecewise        slope b + sum_j d_j [u >= c_j], b, d_j ~ N(0, 1), 1-4 change points c_j ~ U(0, 1)
                   [change_points]: a sum of linear kernels switched on at change points (Prophet).
  damped           1 - exp(-u / tau), tau log-U (0.05, 1) [damped_time]: a saturating trend.
  exponential      expm1(r u) / r, |r| log-U (0.5, 4), sign random [exponential_rate].
  logistic         sigmoid((u - c) / w), c U(0, 1.2), w log-U (0.02, 0.3) [logistic_centre, _width].
  random_walk      cumsum of N(mu, 1), mu ~ N(0, 0.05^2) [walk_drift_std]: the Brownian kernel
                   min(s, t) (with drift: plus a linear kernel).
  integrated_walk  cumsum of a random walk: the integrated-Brownian (cubic spline) kernel.
  kinds are drawn with ``trend_weights`` (2, 2, 1, 1, 1, 2, 1) over ``TREND_KINDS``.

Seasonality [seasonal_prob=0.7]: the periodic kernel exp(-2 sin^2(pi tau / p) / l^2), whose
  draw is a random Fourier series sum_k sqrt(v_k) (a_k cos(2 pi k t / p) + b_k sin(...)),
  a_k, b_k ~ N(0, 1), with v_k the kernel's own Fourier coefficients (2 I_k(1/l^2) e^{-1/l^2},
  ~exp(-k^2 l^2 / 2) for small l: short l gives sharp, many-harmonic shapes, long l a sinusoid);
  l log-U (0.25, 2) [periodic_length_scale], harmonics k = 1..10 [harmonics] with k <= p / 2,
  random phase, amplitude log-U (0.3, 3) [seasonal_amplitude] per period (harmonics holding
  < 1e-5 of the variance are dropped). Up to 3 periods
  [max_seasonalities]: with probability 0.3 [random_period_prob] all are log-U (2, 200)
  [period_range]; otherwise from a sampling-rate family [period_families, family_weights]:
  hourly (24, 168) w3, half-hourly (48, 336) w1, daily (7, 365.25) w2, weekly (52.18,) w1 and
  (52,) w1, monthly (12,) w3, quarterly (4,) w2. The first period is always present, each further
  one with probability 0.6 [extra_period_prob].
  Periodic x RBF [modulation_prob=0.25]: the seasonal part times exp(m E), E an RBF draw with
  length scale log-U (20, 200) [envelope_length_scale], m log-U (0.1, 0.7) [modulation_strength].

Smooth variation [smooth_prob=0.45; amplitude log-U (0.2, 2), smooth_amplitude]: an RBF-kernel
  GP draw, exp(-tau^2 / (2 l^2)) with l log-U (2, 200) [smooth_length_scale]: white noise
  convolved with a Gaussian, done as a filter in the Fourier domain (PSD ~ l exp(-w^2 l^2 / 2)).
  With probability 0.4 [rq_prob] a rational-quadratic kernel (1 + tau^2 / (2 alpha l^2))^-alpha
  instead, alpha in {0.5, 1, ..., 5} [rq_alpha]: RQ is the RBF kernel averaged over inverse squared
  length scales ~ Gamma(alpha, rate alpha l^2); the filter's PSD is the average of 8 [rq_mixture]
  such RBF PSDs (a Monte-Carlo RQ kernel, exact in the mean).
AR noise [ar_prob=0.5; amplitude log-U (0.1, 1.5), ar_amplitude], the same Fourier-domain filter
  with PSD 1 / |1 - phi_1 e^{-iw} - phi_2 e^{-2iw}|^2 (a stationary AR draw, exact up to
  periodisation): AR(1) phi_1 U(-0.5, 0.95) [ar1_coef], or near unit root with probability 0.3
  [unit_root_prob] phi_1 U(0.95, 0.995) [unit_root_coef]; with probability 0.35 [ar2_prob] an
  AR(2) with complex roots r e^{+-i theta}: quasi-cycles (Yule's sunspot model), r U(0.5, 0.98)
  [ar2_radius], 2 pi / theta log-U (3, 100) [ar2_period].
White noise [always; RMS log-U (0.01, 0.5), noise_amplitude; log-U (1, 10) for a very noisy
  series, noisy_prob=0.08]: the white-noise kernel. Heteroscedastic [heteroscedastic_prob=0.2]:
  times exp(v V - v^2) (unit RMS), V an RBF draw with l log-U (5, 100)
  [volatility_length_scale], v log-U (0.3, 1.2) [volatility_strength]: volatility clusters.
Level shifts [level_shift_prob=0.15]: 1-3 [max_level_shifts] steps at U(0, L) of size
  +-log-U (0.5, 3) [level_shift_size]. Spikes [spike_prob=0.1]: each step with probability
  log-U (0.002, 0.02) [spike_rate] gets +-log-U (3, 10) [spike_size] times the series' std.

Composition. Additive (the kernel sum): trend + smooth + AR + shifts + seasonal + noise.
Multiplicative [multiplicative_prob=0.2] (the kernel product, e.g. trend * (1 + seasonal)):
exp(s Z) (1 + d S / max|S|), Z the standardised trend + smooth + AR + shifts + noise, s log-U
(0.05, 1) [log_level_std], d log-U (0.05, 0.8) [seasonal_depth]: strictly positive, seasonal
swings proportional to the level, log-normal noise; its spikes point up.
Output forms, exclusive: nearly constant [constant_prob=0.03] +-scale (1 + e x), x the series
standardised, e log-U (1e-6, 1e-2) [constant_noise]; counts [count_prob=0.08] Poisson with a mean
rate log-U (0.05, 500) [count_rate] following the positive series (low rates: intermittent);
positive [positive_prob=0.15] (x - min x) / std x + margin, margin log-U (0.01, 2)
[positive_margin], times the scale; otherwise scale x + offset, with scale log-U (1e-3, 1e4)
[scale] and, with probability 0.6 [offset_prob], offset (the constant kernel) +-log-U (0.1, 100)
[offset] times the scale (positive for multiplicative series).

Stationary draws (RBF, RQ, AR, envelopes) filter white noise of n_fft = next power of two >=
L + pad samples (pad = 4 x the largest length scale, 3 x the AR memory 1 / (1 - |root|), at most
4 L; n_fft >= 512) and keep the first L: the covariance is the kernel's, periodised over n_fft,
which leaves lags <= L exact to exp(-8) for RBF. Phases are computed in float64, the rest in
float32, on the CPU. The batch depends on the generator's state alone, bit for bit, whatever
torch's thread count (a DataLoader worker runs one thread): no complex-valued kernels and no tiny
FFTs, whose rounding varies with how the work is split.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

TREND_KINDS: tuple[str, ...] = ("linear", "piecewise", "damped", "exponential", "logistic",
                                "random_walk", "integrated_walk")
_EPS = 1e-8
_MIN_PERIOD = 2.0          # the Nyquist limit: a period of 2 steps is the fastest seasonality
_PERIODIC_GRID = 64        # kernel samples per period for its Fourier coefficients (>= 4 harmonics)
_MIN_FFT = 512             # smallest n_fft of the stationary draws (see _fft_size)
_BLOCK = 32                # steps per block of the angle-addition phasors (see _phasors)
_NEGLIGIBLE = 1e-5         # a harmonic's share of the seasonal variance below which it is dropped
_MIN_EXPONENT = -80.0      # exp() arguments clamped here: exp(-80) is still a normal float32, and
                           # underflowing to denormals makes exp ten times slower
# Ranges sampled uniformly (may be <= 0); every other (low, high) range is log-uniform, so > 0.
_UNIFORM_RANGES = frozenset({"change_points", "logistic_centre", "ar1_coef", "unit_root_coef",
                             "ar2_radius", "rq_alpha"})


@dataclass(frozen=True)
class SynthConfig:
    """Every probability and range of the generator; the module docstring says what each does."""

    # trend
    trend_prob: float = 0.65
    trend_weights: tuple[float, ...] = (2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 1.0)   # over TREND_KINDS
    trend_amplitude: tuple[float, float] = (0.3, 3.0)
    change_points: tuple[int, int] = (1, 4)
    damped_time: tuple[float, float] = (0.05, 1.0)
    exponential_rate: tuple[float, float] = (0.5, 4.0)
    logistic_centre: tuple[float, float] = (0.0, 1.2)
    logistic_width: tuple[float, float] = (0.02, 0.3)
    walk_drift_std: float = 0.05
    # seasonality
    seasonal_prob: float = 0.7
    period_families: tuple[tuple[float, ...], ...] = (
        (24.0, 168.0), (48.0, 336.0), (7.0, 365.25), (52.18,), (52.0,), (12.0,), (4.0,))
    family_weights: tuple[float, ...] = (3.0, 1.0, 2.0, 1.0, 1.0, 3.0, 2.0)
    random_period_prob: float = 0.3
    period_range: tuple[float, float] = (2.0, 200.0)
    max_seasonalities: int = 3
    extra_period_prob: float = 0.6
    harmonics: int = 10
    periodic_length_scale: tuple[float, float] = (0.25, 2.0)
    seasonal_amplitude: tuple[float, float] = (0.3, 3.0)
    modulation_prob: float = 0.25
    modulation_strength: tuple[float, float] = (0.1, 0.7)
    envelope_length_scale: tuple[float, float] = (20.0, 200.0)
    # smooth GP variation
    smooth_prob: float = 0.45
    smooth_length_scale: tuple[float, float] = (2.0, 200.0)
    smooth_amplitude: tuple[float, float] = (0.2, 2.0)
    rq_prob: float = 0.4
    rq_alpha: tuple[float, float] = (0.5, 5.0)
    rq_mixture: int = 8
    # autoregressive noise
    ar_prob: float = 0.5
    ar_amplitude: tuple[float, float] = (0.1, 1.5)
    ar1_coef: tuple[float, float] = (-0.5, 0.95)
    unit_root_prob: float = 0.3
    unit_root_coef: tuple[float, float] = (0.95, 0.995)
    ar2_prob: float = 0.35
    ar2_radius: tuple[float, float] = (0.5, 0.98)
    ar2_period: tuple[float, float] = (3.0, 100.0)
    # white and heteroscedastic noise
    noise_amplitude: tuple[float, float] = (0.01, 0.5)
    noisy_prob: float = 0.08
    noisy_amplitude: tuple[float, float] = (1.0, 10.0)
    heteroscedastic_prob: float = 0.2
    volatility_strength: tuple[float, float] = (0.3, 1.2)
    volatility_length_scale: tuple[float, float] = (5.0, 100.0)
    # events
    level_shift_prob: float = 0.15
    max_level_shifts: int = 3
    level_shift_size: tuple[float, float] = (0.5, 3.0)
    spike_prob: float = 0.1
    spike_rate: tuple[float, float] = (0.002, 0.02)
    spike_size: tuple[float, float] = (3.0, 10.0)
    # composition and output form
    multiplicative_prob: float = 0.2
    log_level_std: tuple[float, float] = (0.05, 1.0)
    seasonal_depth: tuple[float, float] = (0.05, 0.8)
    constant_prob: float = 0.03
    constant_noise: tuple[float, float] = (1e-6, 1e-2)
    count_prob: float = 0.08
    count_rate: tuple[float, float] = (0.05, 500.0)
    positive_prob: float = 0.15
    positive_margin: tuple[float, float] = (0.01, 2.0)
    scale: tuple[float, float] = (1e-3, 1e4)
    offset_prob: float = 0.6
    offset: tuple[float, float] = (0.1, 100.0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_prob"):
                if not 0.0 <= value <= 1.0:
                    raise ValueError(
                        f"SynthConfig.{f.name} must be a probability in [0, 1], got {value}")
            elif f.type in ("tuple[float, float]", "tuple[int, int]"):
                _check_range(f.name, value, positive=f.name not in _UNIFORM_RANGES)
        for family in self.period_families:
            if not family or not all(math.isfinite(p) and p >= _MIN_PERIOD for p in family):
                raise ValueError(f"SynthConfig.period_families: each family is a non-empty tuple "
                                 f"of periods >= {_MIN_PERIOD} steps, got {family}")
        _check_weights("trend_weights", self.trend_weights, len(TREND_KINDS))
        _check_weights("family_weights", self.family_weights, len(self.period_families))
        forms = (self.constant_prob, self.count_prob, self.positive_prob)
        rules = (   # (holds, field, what it must be)
            (self.change_points[0] >= 1, "change_points", "low >= 1"),
            (self.period_range[0] >= _MIN_PERIOD, "period_range", f"low >= {_MIN_PERIOD}"),
            (self.ar2_period[0] >= _MIN_PERIOD, "ar2_period", f"low >= {_MIN_PERIOD}"),
            (-1 < self.ar1_coef[0] <= self.ar1_coef[1] < 1, "ar1_coef", "inside (-1, 1)"),
            (-1 < self.unit_root_coef[0] <= self.unit_root_coef[1] < 1, "unit_root_coef",
             "inside (-1, 1)"),
            (0 <= self.ar2_radius[0] <= self.ar2_radius[1] < 1, "ar2_radius", "inside [0, 1)"),
            (self.rq_alpha[0] >= 0.5, "rq_alpha", "low >= 0.5"),
            (self.seasonal_depth[1] < 1, "seasonal_depth", "high < 1 (keeps 1 + d S positive)"),
            (self.max_seasonalities >= 1, "max_seasonalities", ">= 1"),
            (self.harmonics >= 1, "harmonics", ">= 1"),
            (self.rq_mixture >= 1, "rq_mixture", ">= 1"),
            (self.max_level_shifts >= 1, "max_level_shifts", ">= 1"),
            (self.walk_drift_std >= 0, "walk_drift_std", ">= 0"),
            (sum(forms) <= 1, "constant_prob + count_prob + positive_prob",
             "<= 1 (the output forms are exclusive)"),
        )
        for holds, name, requirement in rules:
            if not holds:
                value = forms if "+" in name else getattr(self, name)
                raise ValueError(f"SynthConfig.{name} must be {requirement}, got {value}")


def _check_range(name: str, value: tuple[float, float], *, positive: bool) -> None:
    if len(value) != 2 or not all(math.isfinite(v) for v in value) or value[0] > value[1]:
        raise ValueError(
            f"SynthConfig.{name} must be a finite (low, high) with low <= high, got {value}")
    if positive and value[0] <= 0:
        raise ValueError(
            f"SynthConfig.{name} is sampled log-uniformly: both ends must be > 0, got {value}")


def _check_weights(name: str, weights: tuple[float, ...], size: int) -> None:
    valid = all(math.isfinite(w) and w >= 0 for w in weights) and sum(weights) > 0
    if len(weights) != size or not valid:
        per = f" (one per {TREND_KINDS})" if name == "trend_weights" else " (one per family)"
        raise ValueError(f"SynthConfig.{name} must be {size} finite weights >= 0 with a positive "
                         f"sum{per}, got {weights}")


# -- random draws ------------------------------------------------------------------------------

def _categorical(gen: torch.Generator, weights: tuple[float, ...], n: int) -> torch.Tensor:
    """(n,) indices into weights, drawn with probabilities proportional to them."""
    probs = torch.tensor(weights, dtype=torch.float64)
    return torch.multinomial(probs, n, replacement=True, generator=gen)


def _uniform(gen: torch.Generator, bounds: tuple[float, float], *shape: int) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(shape, generator=gen)


def _log_uniform(gen: torch.Generator, bounds: tuple[float, float], *shape: int) -> torch.Tensor:
    return _uniform(gen, (math.log(bounds[0]), math.log(bounds[1])), *shape).exp()


def _coin(gen: torch.Generator, prob: float, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=gen) < prob


def _sign(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.where(_coin(gen, 0.5, *shape), -1.0, 1.0)


def _rows(mask: torch.Tensor) -> torch.Tensor:
    return mask.nonzero().flatten()


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Rows (n, L) to mean 0, std 1 (constant rows to 0)."""
    std, mean = torch.std_mean(x, dim=-1, keepdim=True, correction=0)
    return (x - mean) / std.clamp_min(_EPS)


# -- trends ------------------------------------------------------------------------------------

def _trend_kind(kind: str, n: int, u: torch.Tensor, cfg: SynthConfig,
                gen: torch.Generator) -> torch.Tensor:
    """Raw (n, L) trend curves of one kind over u = t / L (L,)."""
    if kind == "linear":
        return u.expand(n, -1)
    if kind == "piecewise":
        most = cfg.change_points[1]
        count = torch.randint(cfg.change_points[0], most + 1, (n, 1), generator=gen)
        at = torch.rand(n, most, 1, generator=gen)
        jump = torch.randn(n, most, 1, generator=gen) * (torch.arange(most) < count)[..., None]
        slope = torch.randn(n, 1, generator=gen) + ((u >= at) * jump).sum(1)            # (n, L)
        return slope.cumsum(1)
    if kind == "damped":
        return -torch.expm1(-u / _log_uniform(gen, cfg.damped_time, n, 1))
    if kind == "exponential":
        rate = _log_uniform(gen, cfg.exponential_rate, n, 1) * _sign(gen, n, 1)
        return torch.expm1(rate * u) / rate
    if kind == "logistic":
        centre = _uniform(gen, cfg.logistic_centre, n, 1)
        return torch.sigmoid((u - centre) / _log_uniform(gen, cfg.logistic_width, n, 1))
    steps = torch.randn(n, u.numel(), generator=gen)
    if kind == "random_walk":
        return (steps + cfg.walk_drift_std * torch.randn(n, 1, generator=gen)).cumsum(1)
    return steps.cumsum(1).cumsum(1)                                             # integrated_walk


def _trends(batch: int, length: int, cfg: SynthConfig, gen: torch.Generator) -> torch.Tensor:
    """(B, L) trends, unit std times a random signed amplitude; 0 for series without one."""
    trend = torch.zeros(batch, length)
    present = _coin(gen, cfg.trend_prob, batch)
    kinds = _categorical(gen, cfg.trend_weights, batch)
    amplitude = _log_uniform(gen, cfg.trend_amplitude, batch, 1) * _sign(gen, batch, 1)
    u = torch.arange(length, dtype=torch.float32) / length
    for k, kind in enumerate(TREND_KINDS):
        rows = _rows(present & (kinds == k))
        if rows.numel():
            trend[rows] = _standardise(_trend_kind(kind, rows.numel(), u, cfg, gen))
    return trend * amplitude


# -- seasonality -------------------------------------------------------------------------------

def _periods(batch: int, cfg: SynthConfig, gen: torch.Generator) -> torch.Tensor:
    """(B, S) periods in steps, 0 where a slot is empty; S = cfg.max_seasonalities."""
    slots = cfg.max_seasonalities
    table = torch.zeros(len(cfg.period_families), slots, dtype=torch.float64)
    for i, periods in enumerate(cfg.period_families):
        table[i, :min(slots, len(periods))] = torch.tensor(periods[:slots], dtype=torch.float64)
    family = _categorical(gen, cfg.family_weights, batch)
    random = _log_uniform(gen, cfg.period_range, batch, slots).double()
    chosen = torch.where(_coin(gen, cfg.random_period_prob, batch, 1), random, table[family])
    keep = _coin(gen, cfg.extra_period_prob, batch, slots)
    keep[:, 0] = True
    keep &= _coin(gen, cfg.seasonal_prob, batch, 1)
    return chosen * keep


def _harmonic_variances(length_scale: torch.Tensor, periods: torch.Tensor,
                        harmonics: int) -> torch.Tensor:
    """(n, K) variances of harmonics 1..K of the periodic kernel exp(-2 sin^2(pi tau / p) / l^2):
    its Fourier coefficients (computed from G samples per period), 0 above p / 2, summing to 1."""
    grid = max(_PERIODIC_GRID, 4 * harmonics)
    phase = torch.arange(grid, dtype=torch.float64) / grid
    k = torch.arange(1, harmonics + 1)
    kernel = torch.exp(-2 * torch.sin(math.pi * phase).square() / length_scale[:, None].square())
    # the DFT as a sum, not torch.fft: MKL batches small transforms differently per thread count
    cosines = torch.cos(2 * math.pi * k[:, None] * phase).float()                      # (K, G)
    var = ((2 / grid) * (kernel[:, None, :] * cosines).sum(-1)).clamp_min(0)             # (n, K)
    var = var * (k <= periods[:, None] / 2)
    return var / var.sum(1, keepdim=True).clamp_min(_EPS)


def _phasors(periods: torch.Tensor, start: torch.Tensor,
             length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (n, L) float32 of 2 pi (t / p + start) for periods (n,) and start (n, 1), both
    float64: by angle addition over t = _BLOCK a + b, so only n (L / _BLOCK + _BLOCK) cos and sin
    are evaluated (in float64), and the rest is products."""
    coarse = 2 * math.pi * (torch.arange(0, length, _BLOCK, dtype=torch.float64) / periods[:, None]
                            + start)                                                     # (n, A)
    fine = 2 * math.pi * torch.arange(_BLOCK, dtype=torch.float64) / periods[:, None]    # (n, b)
    c_re, c_im = coarse.cos().float()[..., None], coarse.sin().float()[..., None]
    f_re, f_im = fine.cos().float()[:, None], fine.sin().float()[:, None]
    re = (c_re * f_re - c_im * f_im).flatten(1)[:, :length]
    im = (c_re * f_im + c_im * f_re).flatten(1)[:, :length]
    return re, im


def _seasonality(batch: int, length: int, cfg: SynthConfig, gen: torch.Generator) -> torch.Tensor:
    """(B, L) sum of random Fourier series, one per present period; 0 for series without one."""
    periods = _periods(batch, cfg, gen).flatten()                                          # (B S,)
    slot = _rows(periods > 0)
    n, harmonics = slot.numel(), cfg.harmonics
    seasonal = torch.zeros(batch, length)
    if n == 0:
        return seasonal
    p = periods[slot]
    var = _harmonic_variances(_log_uniform(gen, cfg.periodic_length_scale, n), p, harmonics)
    amplitude = _log_uniform(gen, cfg.seasonal_amplitude, n, 1)
    # c_k = sd_k (a_k - i b_k): Re(c_k z^k) = sd_k (a_k cos k theta + b_k sin k theta), z = e^{i theta}
    coef_re, coef_im = torch.randn(2, n, harmonics, generator=gen) * (var.sqrt() * amplitude)
    start = torch.rand(n, 1, generator=gen, dtype=torch.float64)
    # Harmonics with variance < _NEGLIGIBLE are dropped; sorting by the highest one kept makes the
    # series that still need harmonic k a prefix, so Horner's rule only touches those rows.
    top = torch.arange(1, harmonics + 1).mul(var > _NEGLIGIBLE).amax(1)
    order = torch.argsort(top, descending=True, stable=True)
    p, start, top = p[order], start[order], top[order]
    coef_re, coef_im = coef_re[order], -coef_im[order]
    z_re, z_im = _phasors(p, start, length)                                             # (n, L)
    # Horner's rule, acc = c_k + z (c_{k+1} + z (...)), in real arithmetic: complex multiplication's
    # vectorised and scalar kernels round differently, so results would depend on thread count
    acc_re, acc_im = torch.zeros(n, length), torch.zeros(n, length)
    for k in range(harmonics, 0, -1):
        m = int((top >= k).sum())
        re, im = acc_re[:m], acc_im[:m]
        acc_re[:m], acc_im[:m] = (re * z_re[:m] - im * z_im[:m] + coef_re[:m, k - 1, None],
                                  re * z_im[:m] + im * z_re[:m] + coef_im[:m, k - 1, None])
    return seasonal.index_add_(0, slot[order] // cfg.max_seasonalities, acc_re * z_re - acc_im * z_im)


# -- stationary Gaussian draws (RBF, RQ, AR) by Fourier-domain filtering -----------------------

def _fft_size(length: int, cfg: SynthConfig) -> int:
    roots = max(abs(cfg.ar1_coef[0]), cfg.ar1_coef[1], abs(cfg.unit_root_coef[0]),
                cfg.unit_root_coef[1], cfg.ar2_radius[1])
    scales = max(cfg.smooth_length_scale[1], cfg.envelope_length_scale[1],
                 cfg.volatility_length_scale[1])
    pad = min(max(4 * scales, 3 / (1 - roots)), 4 * length)
    # at least _MIN_FFT: MKL computes batches of tiny transforms differently per thread count
    return max(_MIN_FFT, 1 << math.ceil(math.log2(length + pad)))


def _rbf_psd(length_scale: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """(..., F) spectral density of exp(-tau^2 / (2 l^2)) (unit variance) at angular frequencies."""
    exponent = (-0.5 * (omega * length_scale[..., None]).square()).clamp_min(_MIN_EXPONENT)
    return length_scale[..., None] * exponent.exp()


def _smooth_psd(n: int, omega: torch.Tensor, cfg: SynthConfig,
                gen: torch.Generator) -> torch.Tensor:
    """(n, F) RBF PSDs, or for a fraction rq_prob the average of rq_mixture RBF PSDs whose inverse
    squared length scales are Gamma(alpha, rate alpha l^2), i.e. chi^2_{2 alpha} / (2 alpha l^2)."""
    ell = _log_uniform(gen, cfg.smooth_length_scale, n)
    psd = _rbf_psd(ell, omega)
    rows = _rows(_coin(gen, cfg.rq_prob, n))
    if rows.numel():
        mix, dof_hi = cfg.rq_mixture, round(2 * cfg.rq_alpha[1])
        r = rows.numel()
        dof = torch.randint(round(2 * cfg.rq_alpha[0]), dof_hi + 1, (r, 1, 1), generator=gen)
        normal = torch.randn(r, mix, dof_hi, generator=gen)
        chi2 = (normal.square() * (torch.arange(dof_hi) < dof)).sum(-1)                    # (r, M)
        scales = ell[rows, None] * (dof[..., 0] / chi2.clamp_min(_EPS)).sqrt()
        psd[rows] = _rbf_psd(scales.clamp(0.5, 2.0 * omega.numel()), omega).mean(1)
    return psd


def _ar_psd(n: int, omega: torch.Tensor, cfg: SynthConfig, gen: torch.Generator) -> torch.Tensor:
    """(n, F) PSD 1 / |1 - phi_1 e^{-iw} - phi_2 e^{-2iw}|^2 of random AR(1) / AR(2) processes."""
    phi1 = torch.where(_coin(gen, cfg.unit_root_prob, n, 1),
                       _uniform(gen, cfg.unit_root_coef, n, 1), _uniform(gen, cfg.ar1_coef, n, 1))
    phi2 = torch.zeros(n, 1)
    radius = _uniform(gen, cfg.ar2_radius, n, 1)
    theta = 2 * math.pi / _log_uniform(gen, cfg.ar2_period, n, 1)
    ar2 = _coin(gen, cfg.ar2_prob, n, 1)
    phi1 = torch.where(ar2, 2 * radius * theta.cos(), phi1)
    phi2 = torch.where(ar2, -radius.square(), phi2)
    real = 1 - phi1 * omega.cos() - phi2 * (2 * omega).cos()
    imag = phi1 * omega.sin() + phi2 * (2 * omega).sin()
    return 1 / (real.square() + imag.square())


def _spectral_draw(psd: torch.Tensor, n_fft: int, length: int,
                   gen: torch.Generator) -> torch.Tensor:
    """(R, length) stationary Gaussian draws of unit variance whose spectral density on the rfft
    bins of n_fft steps is proportional to psd (R, n_fft // 2 + 1): white noise, filtered."""
    if psd.shape[0] == 0:                               # (MKL rejects an empty transform)
        return torch.zeros(0, length)
    weight = torch.full((psd.shape[1],), 2.0)
    weight[0] = weight[-1] = 1.0                        # DC and Nyquist appear once in the spectrum
    variance = (psd * weight).sum(1, keepdim=True) / n_fft
    # rfft of unit white noise, drawn directly: interior bins complex with E|X|^2 = n_fft, the DC
    # and Nyquist bins real with variance n_fft
    real, imag = torch.randn(2, *psd.shape, generator=gen)
    imag[:, 0] = imag[:, -1] = 0.0
    gain = (psd * n_fft / (weight * variance.clamp_min(1e-30))).sqrt()   # sqrt(N/2) interior
    return torch.fft.irfft(torch.complex(real * gain, imag * gain), n=n_fft)[:, :length]


def _stationary(batch: int, length: int, seasonal: torch.Tensor, cfg: SynthConfig,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, L) smooth + AR term, seasonal log-envelope and noise log-volatility, zero where absent;
    every draw needed by the batch comes from one batched spectral synthesis."""
    n_fft = _fft_size(length, cfg)
    omega = 2 * math.pi * torch.arange(n_fft // 2 + 1) / n_fft
    parts = [_rows(_coin(gen, cfg.smooth_prob, batch)), _rows(_coin(gen, cfg.ar_prob, batch)),
             _rows(_coin(gen, cfg.modulation_prob, batch) & (seasonal != 0).any(1)),
             _rows(_coin(gen, cfg.heteroscedastic_prob, batch))]
    n = [rows.numel() for rows in parts]
    psd = torch.cat([
        _smooth_psd(n[0], omega, cfg, gen), _ar_psd(n[1], omega, cfg, gen),
        _rbf_psd(_log_uniform(gen, cfg.envelope_length_scale, n[2]), omega),
        _rbf_psd(_log_uniform(gen, cfg.volatility_length_scale, n[3]), omega)])
    draws = _spectral_draw(psd, n_fft, length, gen).split(n)
    stationary, log_envelope, log_volatility = (torch.zeros(batch, length) for _ in range(3))
    targets = ((stationary, cfg.smooth_amplitude), (stationary, cfg.ar_amplitude),
               (log_envelope, cfg.modulation_strength), (log_volatility, cfg.volatility_strength))
    for rows, draw, (target, bounds) in zip(parts, draws, targets, strict=True):
        target.index_add_(0, rows, draw * _log_uniform(gen, bounds, rows.numel(), 1))
    return stationary, log_envelope, log_volatility


# -- events ------------------------------------------------------------------------------------

def _level_shifts(batch: int, length: int, cfg: SynthConfig,
                  gen: torch.Generator) -> torch.Tensor:
    """(B, L) piecewise-constant steps, 0 for series without shifts."""
    most = cfg.max_level_shifts
    count = torch.randint(1, most + 1, (batch, 1), generator=gen)
    count = count * _coin(gen, cfg.level_shift_prob, batch, 1)
    at = (torch.rand(batch, most, generator=gen) * length).long().clamp_max(length - 1)
    size = _log_uniform(gen, cfg.level_shift_size, batch, most) * _sign(gen, batch, most)
    steps = torch.zeros(batch, length).scatter_add_(1, at, size * (torch.arange(most) < count))
    return steps.cumsum(1)


def _add_spikes(x: torch.Tensor, upward: torch.Tensor, cfg: SynthConfig,
                gen: torch.Generator) -> torch.Tensor:
    """x (B, L) with sparse outliers of spike_size x its std in the spike_prob rows (in place)."""
    rows = _rows(_coin(gen, cfg.spike_prob, x.shape[0]))
    n, length = rows.numel(), x.shape[1]
    if n:
        hit = torch.rand(n, length, generator=gen) < _log_uniform(gen, cfg.spike_rate, n, 1)
        sign = torch.where(upward[rows, None], 1.0, _sign(gen, n, length))
        size = _log_uniform(gen, cfg.spike_size, n, length)
        x[rows] += hit * sign * size * x[rows].std(1, keepdim=True, correction=0)
    return x


# -- the batch ---------------------------------------------------------------------------------

def _check_count(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner} needs an integer {name} >= 1, got {value!r}")


def synthetic_batch(batch_size: int, length: int, generator: torch.Generator,
                    config: SynthConfig = SynthConfig()) -> torch.Tensor:
    """(batch_size, length) float32 series, each a random composition; vectorised over the batch
    as far as possible (components drawn per series, but computed with batched tensor ops).

    ``generator`` (a CPU ``torch.Generator``) is the only source of randomness: the same
    generator state gives the same batch.
    """
    for name, value in (("batch_size", batch_size), ("length", length)):
        _check_count("synthetic_batch", name, value)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(f"synthetic_batch needs a CPU torch.Generator, got {generator!r}")
    if not isinstance(config, SynthConfig):
        raise ValueError(f"config must be a SynthConfig, got {type(config).__name__}")
    cfg, gen, batch = config, generator, batch_size

    trend = _trends(batch, length, cfg, gen)
    seasonal = _seasonality(batch, length, cfg, gen)
    stationary, log_envelope, log_volatility = _stationary(batch, length, seasonal, cfg, gen)
    seasonal = seasonal * log_envelope.exp()
    noise_rms = torch.where(_coin(gen, cfg.noisy_prob, batch, 1),
                            _log_uniform(gen, cfg.noisy_amplitude, batch, 1),
                            _log_uniform(gen, cfg.noise_amplitude, batch, 1))
    # exp(v V - v^2) has unit mean square for V ~ N(0, 1)
    volatility = torch.exp(log_volatility - log_volatility.square().mean(1, keepdim=True))
    noise = torch.randn(batch, length, generator=gen) * noise_rms * volatility
    level = trend + stationary + _level_shifts(batch, length, cfg, gen) + noise           # (B, L)

    # the kernel product: exp(s Z) (1 + d S / max|S|), strictly positive
    multiplicative = _coin(gen, cfg.multiplicative_prob, batch)
    x = level + seasonal
    rows = _rows(multiplicative)
    if rows.numel():
        n = rows.numel()
        log_level = _standardise(level[rows]) * _log_uniform(gen, cfg.log_level_std, n, 1)
        swing = seasonal[rows] / seasonal[rows].abs().amax(1, keepdim=True).clamp_min(_EPS)
        x[rows] = log_level.exp() * (1 + _log_uniform(gen, cfg.seasonal_depth, n, 1) * swing)
    x = _add_spikes(x, multiplicative, cfg, gen)

    # output forms: free (scale, offset), positive, count, nearly constant
    scale = _log_uniform(gen, cfg.scale, batch, 1)
    offset = (_log_uniform(gen, cfg.offset, batch, 1) * _coin(gen, cfg.offset_prob, batch, 1)
              * torch.where(multiplicative[:, None], 1.0, _sign(gen, batch, 1)))
    y = scale * (x + offset)
    std, low = x.std(1, keepdim=True, correction=0), x.amin(1, keepdim=True)
    shifted = (x - low) / std.clamp_min(_EPS) + _log_uniform(gen, cfg.positive_margin, batch, 1)
    positive_x = torch.where(multiplicative[:, None], x, shifted)
    form = torch.rand(batch, generator=gen)
    constant = form < cfg.constant_prob
    count = ~constant & (form < cfg.constant_prob + cfg.count_prob)
    positive = ~constant & ~count & (form < cfg.constant_prob + cfg.count_prob + cfg.positive_prob)
    y = torch.where(positive[:, None], scale * positive_x, y)
    rows = _rows(constant)
    if rows.numel():
        wiggle = _log_uniform(gen, cfg.constant_noise, rows.numel(), 1) * _standardise(x[rows])
        y[rows] = scale[rows] * _sign(gen, rows.numel(), 1) * (1 + wiggle)
    rows = _rows(count)
    if rows.numel():   # last: Poisson sampling takes a data-dependent number of draws
        rate = positive_x[rows] / positive_x[rows].mean(1, keepdim=True)
        rate = rate * _log_uniform(gen, cfg.count_rate, rows.numel(), 1)
        y[rows] = torch.poisson(rate, generator=gen)
    return y


# Trend-dominated series: the default mix leaves a clean trend (a linear fit over 160 steps
# explaining > 90% of the variance) in only ~2% of windows, while economic and demographic
# series (GDP, prices, population) are mostly that. This component makes them common: every
# series trends (rarely by random walk), with weaker seasonal, smooth, AR and noise parts.
TREND_DOMINATED = SynthConfig(
    trend_prob=1.0, trend_weights=(3.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0),
    trend_amplitude=(1.0, 5.0), seasonal_prob=0.5, seasonal_amplitude=(0.05, 1.0),
    smooth_prob=0.2, smooth_amplitude=(0.05, 0.5), ar_prob=0.3, ar_amplitude=(0.02, 0.5),
    noise_amplitude=(0.002, 0.2), noisy_prob=0.0, level_shift_prob=0.05, spike_prob=0.02)

# The pre-training mix: (share of each batch, config).
DEFAULT_MIXTURE: tuple[tuple[float, SynthConfig], ...] = ((0.7, SynthConfig()),
                                                          (0.3, TREND_DOMINATED))


def mixture_batch(batch_size: int, length: int, generator: torch.Generator,
                  mixture: Sequence[tuple[float, SynthConfig]]) -> torch.Tensor:
    """(batch_size, length): each (share, config) of ``mixture`` gives round(share * B) series
    (the last takes the rest), in mixture order; shares must sum to 1."""
    shares = [share for share, _ in mixture]
    if not mixture or any(share < 0 for share in shares) or abs(sum(shares) - 1) > 1e-6:
        raise ValueError(f"mixture shares must be >= 0 and sum to 1, got {shares}")
    counts = [round(share * batch_size) for share in shares[:-1]]
    counts.append(batch_size - sum(counts))
    if counts[-1] < 0:
        raise ValueError(f"mixture shares {shares} do not fit a batch of {batch_size}")
    return torch.cat([synthetic_batch(n, length, generator, config)
                      for n, (_, config) in zip(counts, mixture, strict=True) if n > 0])


# -- the dataset -------------------------------------------------------------------------------

def _item_seed(seed: int, index: int) -> int:
    """A 63-bit generator seed from (seed, index) alone (blake2b, so stable across processes)."""
    digest = hashlib.blake2b(f"zoo.data.synthetic:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SyntheticSeries(torch.utils.data.Dataset):
    """Map-style and resumable: item i is a whole batch (batch_size, length) rebuilt from
    torch.Generator seeded with a hash of (seed, i) alone, so any item can be regenerated in
    any order, in any worker. __len__ = num_batches. Use with DataLoader(batch_size=None)."""

    def __init__(self, num_batches: int, batch_size: int, length: int, seed: int = 0,
                 config: SynthConfig | Sequence[tuple[float, SynthConfig]] = SynthConfig()
                 ) -> None:
        for name, value in (("num_batches", num_batches), ("batch_size", batch_size),
                            ("length", length)):
            _check_count("SyntheticSeries", name, value)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"SyntheticSeries needs an integer seed, got {seed!r}")
        if not isinstance(config, SynthConfig):   # a mixture: (share, SynthConfig) pairs
            if not isinstance(config, Sequence) or not all(
                    isinstance(pair, Sequence) and len(pair) == 2
                    and isinstance(pair[1], SynthConfig) for pair in config):
                raise ValueError("config must be a SynthConfig or (share, SynthConfig) pairs")
            mixture_batch(len(config), 1, torch.Generator(), config)   # checks the shares
        self.num_batches, self.batch_size, self.length = num_batches, batch_size, length
        self.seed, self.config = seed, config

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> torch.Tensor:
        """(batch_size, length) float32: batch ``index`` (negative counts from the end)."""
        if not -self.num_batches <= index < self.num_batches:
            raise IndexError(f"batch {index} out of range for {self.num_batches} batches")
        index %= self.num_batches
        gen = torch.Generator().manual_seed(_item_seed(self.seed, index))
        if isinstance(self.config, SynthConfig):
            return synthetic_batch(self.batch_size, self.length, gen, self.config)
        return mixture_batch(self.batch_size, self.length, gen, self.config)
