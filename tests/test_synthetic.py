"""Synthetic series (zoo.data.synthetic): determinism and resumability, finite values, that each
part of the mix is what the module says (seasonal periods, kernels' autocorrelations, trends,
counts, positivity, constants, scale diversity), and argument checks."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import torch

from zoo.data.synthetic import TREND_KINDS, SynthConfig, SyntheticSeries, synthetic_batch

# Everything off but a whisper of white noise: a test switches on the part it checks.
QUIET = SynthConfig(
    trend_prob=0.0, seasonal_prob=0.0, smooth_prob=0.0, ar_prob=0.0, noise_amplitude=(1e-4, 1e-4),
    noisy_prob=0.0, heteroscedastic_prob=0.0, level_shift_prob=0.0, spike_prob=0.0,
    multiplicative_prob=0.0, constant_prob=0.0, count_prob=0.0, positive_prob=0.0)


def batch(config: SynthConfig, batch_size: int = 64, length: int = 1024,
          seed: int = 0) -> torch.Tensor:
    return synthetic_batch(batch_size, length, torch.Generator().manual_seed(seed), config)


def acf(x: torch.Tensor, lag: int) -> torch.Tensor:
    """(B,) Pearson correlation of each row with itself ``lag`` steps later."""
    a, b = x[:, lag:].double(), x[:, :-lag].double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.square().sum(1) * b.square().sum(1)).sqrt()


# -- determinism, shape, dataset ---------------------------------------------------------------

def test_items_are_rebuilt_from_seed_and_index_alone() -> None:
    data = SyntheticSeries(num_batches=5, batch_size=8, length=100, seed=3)
    late_first = data[4]                                       # any order: nothing carried over
    items = [data[i] for i in range(5)]
    assert len(data) == 5
    assert items[0].shape == (8, 100) and items[0].dtype == torch.float32
    assert torch.equal(late_first, items[4])
    assert torch.equal(SyntheticSeries(5, 8, 100, seed=3)[2], items[2])
    assert torch.equal(data[-1], items[4])
    assert not torch.equal(items[0], items[1])
    assert not torch.equal(SyntheticSeries(5, 8, 100, seed=4)[2], items[2])
    with pytest.raises(IndexError):
        data[5]


def test_dataloader_workers_give_the_same_batches() -> None:
    data = SyntheticSeries(num_batches=4, batch_size=4, length=64, seed=1)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2)
    for i, item in enumerate(loader):
        assert torch.equal(item, data[i])


def test_the_generator_is_the_only_randomness() -> None:
    gen = torch.Generator().manual_seed(7)
    first, second = synthetic_batch(16, 200, gen), synthetic_batch(16, 200, gen)
    assert not torch.equal(first, second)
    torch.manual_seed(123)                                     # the global RNG plays no part
    assert torch.equal(synthetic_batch(16, 200, torch.Generator().manual_seed(7)), first)


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize(("batch_size", "length"), [(1, 7), (37, 333), (256, 1024)])
def test_batches_do_not_depend_on_the_thread_count(batch_size: int, length: int) -> None:
    """Workers run one thread, a main process several: the batch is the same bit for bit."""
    batches = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        batches.append(batch(FORCED["everything"], batch_size, length, seed=length))
    assert torch.equal(*batches)


# -- finite everywhere -------------------------------------------------------------------------

FORCED = {
    **{f"trend={kind}": replace(QUIET, trend_prob=1.0, trend_weights=tuple(
        float(k == i) for k in range(len(TREND_KINDS)))) for i, kind in enumerate(TREND_KINDS)},
    "everything": SynthConfig(
        trend_prob=1.0, seasonal_prob=1.0, extra_period_prob=1.0, modulation_prob=1.0,
        smooth_prob=1.0, rq_prob=1.0, ar_prob=1.0, noisy_prob=1.0, heteroscedastic_prob=1.0,
        level_shift_prob=1.0, spike_prob=1.0, offset_prob=1.0),
    "multiplicative": SynthConfig(multiplicative_prob=1.0, spike_prob=1.0, constant_prob=0.0,
                                  count_prob=0.0, positive_prob=0.0),
    "counts": SynthConfig(count_prob=1.0, constant_prob=0.0, positive_prob=0.0),
    "extremes": SynthConfig(
        unit_root_prob=1.0, unit_root_coef=(0.999, 0.999), smooth_length_scale=(5000.0, 5000.0),
        rq_alpha=(0.5, 0.5), periodic_length_scale=(0.05, 0.05), harmonics=40,
        exponential_rate=(20.0, 20.0), logistic_width=(1e-4, 1e-4), scale=(1e-6, 1e6)),
}


@pytest.mark.parametrize("length", [1, 2, 5, 33, 1024])
def test_default_mix_is_finite(length: int) -> None:
    for seed in range(6):
        x = batch(SynthConfig(), batch_size=128, length=length, seed=seed)
        assert x.shape == (128, length) and x.dtype == torch.float32
        assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", sorted(FORCED))
def test_every_part_is_finite(name: str) -> None:
    for length in (1, 3, 300):
        assert torch.isfinite(batch(FORCED[name], batch_size=64, length=length)).all()


# -- the mix holds what it claims --------------------------------------------------------------

@pytest.mark.parametrize("period", [4.0, 7.0, 12.0, 24.0, 52.18])
def test_a_single_period_repeats(period: float) -> None:
    config = replace(QUIET, seasonal_prob=1.0, random_period_prob=0.0, modulation_prob=0.0,
                     period_families=((period,),), family_weights=(1.0,))
    x = batch(config, length=512)
    lag = round(period)
    assert acf(x, lag).min() > 0.9
    assert acf(x, lag // 2).mean() < acf(x, lag).mean() - 0.5   # not merely smooth


def test_two_periods_at_once() -> None:
    """An hourly family with both periods: a 168-periodic series whose weekly harmonics (those
    that are not multiples of 1/24) carry power."""
    config = replace(QUIET, seasonal_prob=1.0, random_period_prob=0.0, modulation_prob=0.0,
                     extra_period_prob=1.0, period_families=((24.0, 168.0),), family_weights=(1.0,))
    x = batch(config, length=168 * 6).double()
    assert acf(x, 168).min() > 0.9
    power = torch.fft.rfft(x - x.mean(1, keepdim=True)).abs().square()
    weekly = [6 * k for k in range(1, 42) if k % 7]                # bins of k / 168, k not 7j
    assert (power[:, weekly].sum(1) / power.sum(1)).min() > 1e-3


def test_rbf_draws_have_the_rbf_autocorrelation() -> None:
    x = batch(replace(QUIET, smooth_prob=1.0, rq_prob=0.0, smooth_length_scale=(8.0, 8.0)), 128)
    for lag in (4, 8, 16):
        assert acf(x, lag).mean().item() == pytest.approx(math.exp(-lag**2 / 128), abs=0.04)


def test_ar1_draws_have_geometric_autocorrelation() -> None:
    config = replace(QUIET, ar_prob=1.0, ar2_prob=0.0, unit_root_prob=0.0, ar1_coef=(0.7, 0.7))
    x = batch(config, 128)
    for lag in (1, 2, 3):
        assert acf(x, lag).mean().item() == pytest.approx(0.7**lag, abs=0.03)


def test_ar2_quasi_cycles() -> None:
    config = replace(QUIET, ar_prob=1.0, ar2_prob=1.0, ar2_radius=(0.95, 0.95), ar2_period=(20.0, 20.0))
    x = batch(config, 128)
    assert acf(x, 10).mean() < -0.3 and acf(x, 20).mean() > 0.2   # half a cycle, a whole cycle


def test_linear_trend_is_a_line() -> None:
    config = replace(QUIET, trend_prob=1.0, trend_weights=(1.0, 0, 0, 0, 0, 0, 0))
    x = batch(config, length=300).double()
    t = torch.stack([torch.ones(300), torch.arange(300.0)], 1).double()
    residual = x.T - t @ torch.linalg.lstsq(t, x.T).solution
    explained = 1 - residual.square().sum(0) / (x - x.mean(1, keepdim=True)).square().sum(1)
    assert explained.min() > 0.999


def test_counts_are_nonnegative_integers() -> None:
    x = batch(SynthConfig(count_prob=1.0, constant_prob=0.0, positive_prob=0.0), length=256)
    assert (x >= 0).all() and torch.equal(x, x.round())
    sparse = batch(SynthConfig(count_prob=1.0, constant_prob=0.0, positive_prob=0.0,
                               count_rate=(0.05, 0.05)), length=256)
    assert (sparse == 0).float().mean() > 0.8                     # intermittent at low rates


def test_positive_and_multiplicative_series_are_strictly_positive() -> None:
    for config in (SynthConfig(positive_prob=1.0, constant_prob=0.0, count_prob=0.0),
                   FORCED["multiplicative"]):
        assert (batch(config, length=256) > 0).all()


def test_constant_series_barely_move() -> None:
    x = batch(SynthConfig(constant_prob=1.0, count_prob=0.0, positive_prob=0.0), length=256).double()
    std, mean = torch.std_mean(x, dim=1, correction=0)
    assert (mean.abs() > 0).all() and (std / mean.abs()).max() < 1.1e-2


def test_default_mix_is_diverse() -> None:
    x = batch(SynthConfig(), batch_size=1024, length=256)
    std, mean = torch.std_mean(x.double(), dim=1, correction=0)
    counts = (x >= 0).all(1) & (x == x.round()).all(1)
    assert (x < 0).any(1).float().mean() > 0.2                    # some series go negative
    assert (x > 0).all(1).float().mean() > 0.2                    # some stay strictly positive
    assert counts.float().mean() > 0.03
    assert (std < 1e-2 * mean.abs()).float().mean() > 0.01        # nearly constant
    assert (mean < 0).float().mean() > 0.1
    decades = std.clamp_min(1e-30).log10()
    assert decades.quantile(0.95) - decades.quantile(0.05) > 4    # scales span orders of magnitude


# -- argument checks ---------------------------------------------------------------------------

@pytest.mark.parametrize(("batch_size", "length", "named"), [
    (0, 10, "batch_size"), (-1, 10, "batch_size"), (True, 10, "batch_size"), (4, 0, "length"),
    (4, 2.5, "length")])
def test_bad_sizes(batch_size: int, length: int, named: str) -> None:
    with pytest.raises(ValueError, match=f"integer {named} >= 1"):
        synthetic_batch(batch_size, length, torch.Generator())


def test_bad_generator_and_config() -> None:
    with pytest.raises(ValueError, match=r"CPU torch\.Generator"):
        synthetic_batch(4, 10, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="SynthConfig"):
        synthetic_batch(4, 10, torch.Generator(), {"trend_prob": 1.0})  # type: ignore[arg-type]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("trend_prob", 1.5, "probability in"),
    ("seasonal_prob", -0.1, "probability in"),
    ("spike_prob", float("nan"), "probability in"),
    ("scale", (0.0, 1.0), "log-uniformly"),
    ("smooth_length_scale", (10.0, 2.0), "low <= high"),
    ("period_range", (1.0, 10.0), "period_range"),
    ("period_families", ((12.0,), (1.0,)), "period_families"),
    ("trend_weights", (1.0, 2.0), "trend_weights"),
    ("family_weights", (0.0,) * 7, "family_weights"),
    ("ar1_coef", (0.0, 1.0), "ar1_coef"),
    ("seasonal_depth", (0.1, 1.0), "seasonal_depth"),
    ("harmonics", 0, "harmonics"),
    ("count_prob", 0.9, "output forms are exclusive"),
])
def test_bad_config(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(SynthConfig(), **{field: value})


@pytest.mark.parametrize("kwargs", [dict(num_batches=0), dict(batch_size=0), dict(length=0),
                                    dict(seed="a"), dict(config=None)])
def test_bad_dataset_arguments(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = dict(num_batches=2, batch_size=2, length=8) | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SyntheticSeries(**arguments)  # type: ignore[arg-type]


def test_mixture_batches_take_each_share_from_its_config() -> None:
    from zoo.data.synthetic import TREND_DOMINATED, mixture_batch

    linear = SynthConfig(trend_prob=1.0, trend_weights=(1, 0, 0, 0, 0, 0, 0), seasonal_prob=0.0,
                         smooth_prob=0.0, ar_prob=0.0, noise_amplitude=(1e-4, 1e-4), noisy_prob=0.0,
                         level_shift_prob=0.0, spike_prob=0.0, multiplicative_prob=0.0,
                         constant_prob=0.0, count_prob=0.0)
    flat = SynthConfig(trend_prob=0.0, seasonal_prob=0.0, smooth_prob=0.0, ar_prob=0.0,
                       level_shift_prob=0.0, spike_prob=0.0, multiplicative_prob=0.0,
                       constant_prob=0.0, count_prob=0.0, noisy_prob=0.0)
    x = mixture_batch(10, 200, torch.Generator().manual_seed(0), ((0.3, linear), (0.7, flat)))
    t = torch.arange(200.0)
    corr = torch.stack([torch.corrcoef(torch.stack([row, t]))[0, 1].abs() for row in x])
    assert (corr[:3] > 0.999).all() and (corr[3:] < 0.5).all()   # 3 lines, then 7 noises
    with pytest.raises(ValueError, match="sum to 1"):
        mixture_batch(4, 10, torch.Generator(), ((0.5, flat), (0.6, TREND_DOMINATED)))
    series = SyntheticSeries(2, 8, 64, seed=1, config=((0.5, linear), (0.5, flat)))
    assert torch.equal(series[1], SyntheticSeries(2, 8, 64, seed=1,
                                                   config=((0.5, linear), (0.5, flat)))[1])
