"""The lecture, reproduced: each claim asserted with kflow's own measurements.

The experiments are the YAML files of `recipes/lecture/` (and `--set`
variations of them). Runs that the doctor must judge are saved to a run
directory; the others train with `save=False`.
"""

import math

import numpy as np
import pytest

import kflow
from kflow.data import train_val_test_split
from kflow.insight.doctor import read_findings
from kflow.run import read_grad_norms
from tests.conftest import REPO

LECTURE = REPO / "recipes" / "lecture"


def _train(config: str, tmp_path_factory=None, *set_args: str, save: bool = True):
    run_dir = tmp_path_factory.mktemp("lecture") / config if save else None
    return kflow.train(str(LECTURE / f"{config}.yaml"), run_dir=run_dir, verbose=0,
                       set_args=list(set_args), save=save)


def _first_last_ratio(run_dir) -> float:
    """Median over logged steps of |grad first weight layer| / |grad last layer|."""
    g = read_grad_norms(run_dir)
    layers = [n for n in g.layers if "Normalization" not in g.kinds[n]]
    first, last = np.asarray(g.grad[layers[0]]), np.asarray(g.grad[layers[-1]])
    return float(np.median(first / last))


_DEEP = ("deep_sigmoid", "deep_relu_bn", "deep_relu_skip", "large_init", "large_lr")


@pytest.fixture(scope="module")
def deep_runs(tmp_path_factory):
    """The five 8-layer configurations, trained once for the module."""
    return {name: _train(name, tmp_path_factory) for name in _DEEP}


def _finding_ids(run) -> set[str]:
    return {f.id for f in read_findings(run.run_dir)}


# The five deep runs take 20-40 s together on 2 CPU cores: marked slow (CI runs them too).
@pytest.mark.slow
def test_deep_sigmoid_with_small_weights_has_vanishing_gradients(deep_runs):
    run = deep_runs["deep_sigmoid"]
    ratio = _first_last_ratio(run.run_dir)
    assert ratio < 1e-4, f"first/last gradient norm ratio {ratio:.2e}"
    vanishing = next(f for f in read_findings(run.run_dir) if f.id == "vanishing_gradients")
    assert "hidden_0_dense" in vanishing.evidence
    assert any("ReLU instead of sigmoid" in tip for tip in vanishing.advice)
    assert any("He initialization" in tip for tip in vanishing.advice)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["deep_relu_bn", "deep_relu_skip"])
def test_relu_he_init_and_batchnorm_or_skips_keep_gradients_alive(deep_runs, config):
    ratio = _first_last_ratio(deep_runs[config].run_dir)
    assert ratio > 1e-1, f"{config}: first/last gradient norm ratio {ratio:.2e}"
    # And the network learns: the loss falls well below chance (ln 10 = 2.30).
    assert deep_runs[config].history["loss"][-1] < 1.5


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, expected, absent",
    [
        ("deep_sigmoid", {"vanishing_gradients"}, {"exploding_gradients", "healthy"}),
        ("deep_relu_bn", set(), {"vanishing_gradients", "exploding_gradients", "dead_relus",
                                 "lr_too_large", "lr_too_small"}),
        ("deep_relu_skip", set(), {"vanishing_gradients", "exploding_gradients", "dead_relus",
                                   "lr_too_large", "lr_too_small"}),
        ("large_init", {"exploding_gradients"}, {"vanishing_gradients", "healthy"}),
        ("large_lr", {"lr_too_large"}, {"vanishing_gradients", "healthy"}),
    ],
)
def test_the_doctor_flags_bad_configurations_and_only_those(deep_runs, config, expected,
                                                             absent):
    ids = _finding_ids(deep_runs[config])
    assert expected <= ids, ids
    assert not (absent & ids), ids
    if not expected:  # the cures: healthy, or only trailing the baseline after 3 epochs
        assert ids in ({"healthy"}, {"worse_than_baseline"}), ids


@pytest.mark.slow
def test_very_large_initial_weights_explode(deep_runs):
    g = read_grad_norms(deep_runs["large_init"].run_dir)
    healthy = read_grad_norms(deep_runs["deep_relu_bn"].run_dir)
    # The first logged gradient is orders of magnitude larger than a healthy network's.
    assert g.grad["total"][0] > 1e3 * healthy.grad["total"][0]
    assert deep_runs["large_init"].history["loss"][0] > 1e6


@pytest.mark.slow
def test_very_large_learning_rate_diverges(deep_runs):
    loss = deep_runs["large_lr"].history["loss"]
    # The first epoch's loss blows up (chance level: ln 10 = 2.30).
    assert loss[0] > 10 * math.log(10), "the first epoch's loss blows up"
    assert loss[-1] > math.log(10), "and training ends worse than guessing"


@pytest.fixture(scope="module")
def step_runs(tmp_path_factory):
    return {lr: _train(f"step_size_{lr}", tmp_path_factory) for lr in ("0.9", "0.2")}


def test_step_size_0_9_diverges_and_0_2_converges(step_runs):
    big, small = step_runs["0.9"].history["loss"], step_runs["0.2"].history["loss"]
    assert all(b > a for a, b in zip(big, big[1:], strict=False)), "0.9: higher every step"
    assert big[-1] > 1e6 * big[0]
    assert all(b < a for a, b in zip(small, small[1:], strict=False)), "0.2: downhill"
    assert small[-1] < 0.01 * small[0]
    assert "lr_too_large" in _finding_ids(step_runs["0.9"])
    # Converging is healthy; a few epochs of full-batch GD may still trail the closed-form
    # linear regression baseline on the same split, which the doctor says as well.
    assert _finding_ids(step_runs["0.2"]) <= {"healthy", "worse_than_baseline"}
    assert "lr_too_large" not in _finding_ids(step_runs["0.2"])


def test_full_batch_vs_sgd_vs_mini_batch():
    runs = {bs: _train("gradient_descent", None, f"batch_size={bs}", save=False)
            for bs in ("full", "1", "32")}
    recipe, _ = kflow.resolve_recipe(str(LECTURE / "gradient_descent.yaml"))
    n = len(train_val_test_split(recipe.load_data(), 0.15, 0.15, seed=0).train)
    updates = {bs: int(r.model.optimizer.iterations.numpy()) // 3 for bs, r in runs.items()}
    assert updates == {"full": 1, "1": n, "32": math.ceil(n / 32)}
    loss = {bs: r.history["loss"][-1] for bs, r in runs.items()}
    # Same epochs, same step size: more (noisier) updates per epoch get further.
    assert loss["1"] < loss["32"] < loss["full"], loss
    # Full-batch gradient descent goes steadily downhill, one small step per epoch.
    full = runs["full"].history["loss"]
    assert all(b < a for a, b in zip(full, full[1:], strict=False))


@pytest.fixture(scope="module")
def overfit_runs(tmp_path_factory):
    runs = {"none": _train("overfit", tmp_path_factory)}
    for name, extra in {"dropout": ["dropout=0.5"], "l2": ["regularizer=l2"],
                        "early_stopping": ["early_stopping=true"]}.items():
        runs[name] = _train("overfit", None, *extra, save=False)
    return runs


def _gap(run) -> float:
    return run.metrics["val"]["loss"] - run.metrics["train"]["loss"]


@pytest.mark.slow
def test_overfitting_model_has_a_large_gap_and_the_doctor_says_so(overfit_runs):
    run = overfit_runs["none"]
    assert run.metrics["train"]["accuracy"] > 0.95
    assert _gap(run) > 1.0
    finding = next(f for f in read_findings(run.run_dir) if f.id == "overfitting")
    assert "validation loss was lowest at epoch" in finding.evidence
    assert any("dropout" in tip for tip in finding.advice)


@pytest.mark.slow
@pytest.mark.parametrize("remedy", ["dropout", "l2", "early_stopping"])
def test_dropout_l2_and_early_stopping_shrink_the_gap(overfit_runs, remedy):
    base, fixed = _gap(overfit_runs["none"]), _gap(overfit_runs[remedy])
    assert fixed < 0.85 * base, f"{remedy}: gap {fixed:.3f} vs {base:.3f} unregularized"


def test_normalized_inputs_converge_faster_than_raw_scales():
    raw = _train("feature_scales", None, save=False)
    norm = _train("feature_scales", None, "scaling=standard", save=False)
    # Same model, optimizer and epochs: the standardized run is far ahead at every epoch.
    for r, s in zip(raw.history["val_loss"], norm.history["val_loss"], strict=True):
        assert s < r
    assert norm.history["val_accuracy"][1] > 0.85
    assert raw.metrics["val"]["loss"] > 5 * norm.metrics["val"]["loss"]
