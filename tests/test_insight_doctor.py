"""The training doctor on synthetic run directories (no training, no TensorFlow)."""

import csv
import json
import math

import numpy as np
import pytest
import yaml

from kflow.insight import doctor
from kflow.insight.doctor import (
    Finding,
    diagnose_run,
    format_findings,
    read_findings,
    write_findings,
)
from kflow.run import GRAD_NORMS_COLUMNS, read_run
from tests.conftest import run_cli

LAYERS = [("hidden_0_dense", "Dense"), ("hidden_0_bn", "BatchNormalization"),
          ("hidden_1_dense", "Dense"), ("probabilities", "Dense")]


def make_run(path, *, loss, val_loss=None, grads=None, accuracy=None, dead=None,
             config=None, metrics=None, task="multiclass", classes=10, first_epoch=1):
    """Writes a run directory with the files the doctor reads.

    Args:
        loss, val_loss: Per-epoch losses.
        grads: `{layer: [norm per logged step]}` (2 steps per epoch), or None.
        accuracy: `(train, val)` final accuracies for metrics.json.
        dead: `{layer: [fraction per epoch]}` dead-ReLU columns.
        first_epoch: The number of the first epoch in history.csv and
            grad_norms.csv: 1, or 0 as in the files of older runs.
    """
    path.mkdir(parents=True, exist_ok=True)
    epochs = len(loss)
    history = {"epoch": list(range(first_epoch, first_epoch + epochs)), "loss": loss}
    if val_loss is not None:
        history["val_loss"] = val_loss
    for name, values in (dead or {}).items():
        history[f"dead_relu/{name}"] = values
    with (path / "history.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(history)
        w.writerows(zip(*history.values(), strict=True))
    if grads is not None:
        with (path / "grad_norms.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=GRAD_NORMS_COLUMNS)
            w.writeheader()
            steps = len(next(iter(grads.values())))
            for i in range(steps):
                total = math.sqrt(sum(v[i] ** 2 for v in grads.values()))
                rows = [(n, k, grads[n][i]) for n, k in LAYERS if n in grads]
                for name, kind, g in rows + [("total", "total", total)]:
                    w.writerow({"step": 1 + 10 * i, "epoch": first_epoch + i // 2,
                                "layer": name,
                                "kind": kind, "grad_norm": g, "weight_norm": 10.0,
                                "update_ratio": 1e-3})
    cfg = {"recipe": "synthetic", "seed": 0,
           "optimizer": {"name": "adam", "learning_rate": 1e-3, "global_clipnorm": None},
           "training": {"epochs": epochs, "early_stopping": False},
           "data": {"scaling": "standard"},
           "model": {"activation": "relu", "initializer": "he_normal", "batch_norm": "none",
                     "dropout": 0.0, "regularizer": "none"}}
    for key, value in (config or {}).items():
        group = next(g for g in ("optimizer", "training", "data", "model") if key in cfg[g])
        cfg[group][key] = value
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "run.json").write_text(json.dumps(
        {"task": task, "class_names": [str(i) for i in range(classes)]}))
    m = {"epochs_run": epochs, "stopped_early": False}
    if accuracy:
        m["train"], m["val"] = {"accuracy": accuracy[0]}, {"accuracy": accuracy[1]}
    m.update(metrics or {})
    (path / "metrics.json").write_text(json.dumps(m))
    return path


def _healthy_grads(steps=8):
    return {"hidden_0_dense": [0.8] * steps, "hidden_0_bn": [0.1] * steps,
            "hidden_1_dense": [1.0] * steps, "probabilities": [1.2] * steps}


def _decay(start, end, n):
    return list(np.geomspace(start, end, n))


CASES = {
    # name: (make_run kwargs, expected finding ids)
    "healthy": (dict(loss=_decay(2.0, 0.2, 8), val_loss=_decay(1.8, 0.25, 8),
                     grads=_healthy_grads(), accuracy=(0.95, 0.93)), {"healthy"}),
    "vanishing": (dict(loss=[2.30, 2.30, 2.29, 2.29, 2.29], val_loss=[2.3] * 5,
                       grads={"hidden_0_dense": [1e-9] * 10, "hidden_1_dense": [1e-5] * 10,
                              "probabilities": [0.5] * 10},
                       config={"activation": "sigmoid", "initializer": "random_normal"}),
                  {"vanishing_gradients"}),
    "exploding_growth": (dict(loss=[2.0, 1.9, 1.85, 1.8, 1.78, 1.75],
                              val_loss=[2.0, 1.9, 1.9, 1.8, 1.8, 1.7],
                              grads={"hidden_0_dense": _decay(1, 1e4, 12),
                                     "probabilities": _decay(1, 1e4, 12)}),
                         {"exploding_gradients"}),
    "exploding_nan": (dict(loss=[2.0, 1.5, float("nan")], val_loss=[1.9, 1.6, float("nan")],
                           grads=_healthy_grads(6),
                           metrics={"nan_stop": {"epoch": 3, "step": 7, "value": "nan"}}),
                      {"exploding_gradients"}),
    "dead_relus": (dict(loss=_decay(2.0, 0.5, 5), val_loss=_decay(1.9, 0.55, 5),
                        dead={"hidden_0_relu": [0.1, 0.3, 0.5, 0.7, 0.8],
                              "hidden_1_relu": [0.0] * 5}),
                   {"dead_relus"}),
    "lr_too_large_diverges": (dict(loss=[1.0, 1.5, 3.0, 9.0, 30.0],
                                   val_loss=[1.1, 1.6, 3.2, 9.5, 31.0], task="regression"),
                              {"lr_too_large"}),
    "lr_too_large_oscillates": (dict(loss=[1.0, 0.8, 1.1, 0.7, 1.2, 0.75, 1.15, 0.8],
                                     val_loss=[1.0, 0.8, 1.1, 0.7, 1.2, 0.75, 1.15, 0.8],
                                     task="regression"),
                                {"lr_too_large"}),
    # The lecture's lr=20 on a BatchNorm MLP: the first epoch throws the weights far off
    # (27x chance), then the loss falls but ends above chance: worse than guessing.
    "lr_too_large_blowup": (dict(loss=[62.7, 10.8, 4.1], val_loss=[22171.5, 2403.4, 152.8],
                                 accuracy=(0.1, 0.1)),
                            {"lr_too_large"}),
    "lr_too_small": (dict(loss=[1.000, 0.999, 0.998, 0.997, 0.996],
                          val_loss=[1.0, 0.999, 0.998, 0.997, 0.996], task="regression",
                          config={"learning_rate": 1e-7}),
                     {"lr_too_small"}),
    "overfitting": (dict(loss=_decay(2.0, 0.01, 10),
                         val_loss=[1.5, 1.0, 0.8, 0.7, 0.75, 0.85, 0.95, 1.1, 1.2, 1.3],
                         accuracy=(1.0, 0.8)),
                    {"overfitting"}),
    "underfitting": (dict(loss=[2.30, 2.10, 2.05, 2.04, 2.035, 2.03],
                          val_loss=[2.3, 2.1, 2.06, 2.05, 2.04, 2.04], accuracy=(0.3, 0.3)),
                     {"underfitting"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_rule_fires_on_its_case_and_only_there(tmp_path, case):
    kwargs, expected = CASES[case]
    findings = diagnose_run(make_run(tmp_path / case, **kwargs))
    ids = {f.id for f in findings}
    assert ids == expected, [(f.id, f.evidence) for f in findings]
    for f in findings:
        assert f.severity in doctor.SEVERITIES
        assert f.title and f.evidence.endswith(".") and f.why
        if f.id != "healthy":
            assert f.advice, f.id


def test_vanishing_evidence_names_layers_numbers_and_epoch(tmp_path):
    kwargs, _ = CASES["vanishing"]
    (f,) = diagnose_run(make_run(tmp_path / "r", **kwargs))
    assert f.severity == "error"
    assert "hidden_0_dense" in f.evidence and "probabilities" in f.evidence
    assert "2.00e-09" in f.evidence and "8.7 orders of magnitude" in f.evidence
    assert "epoch 5" in f.evidence
    # Advice in the lecture's terms, for this config.
    text = " ".join(f.advice)
    for term in ("ReLU instead of sigmoid", "He initialization", "Batch Normalization",
                 "skip connections"):
        assert term in text
    assert f.data["first_layer"] == "hidden_0_dense" and f.data["ratio"] == pytest.approx(2e-9)


def test_normalization_layers_are_not_the_first_layer(tmp_path):
    grads = {"hidden_0_dense": [1.0] * 6, "hidden_0_bn": [1e-9] * 6,
             "hidden_1_dense": [1.0] * 6, "probabilities": [1.0] * 6}
    findings = diagnose_run(make_run(tmp_path / "r", loss=_decay(2, 0.2, 3), grads=grads))
    assert [f.id for f in findings] == ["healthy"]


def test_exact_zero_gradients_are_dead_units_not_vanishing(tmp_path):
    grads = {"hidden_0_dense": [0.0] * 6, "probabilities": [0.4] * 6}
    findings = diagnose_run(make_run(tmp_path / "r", loss=[2.3, 2.3, 2.3], grads=grads,
                                     dead={"hidden_0_relu": [1.0, 1.0, 1.0]}))
    ids = {f.id for f in findings}
    assert "dead_relus" in ids and "vanishing_gradients" not in ids


def test_nan_loss_names_epoch_and_step(tmp_path):
    kwargs, _ = CASES["exploding_nan"]
    (f,) = diagnose_run(make_run(tmp_path / "r", **kwargs))
    assert f.title == "Exploding gradients (NaN/Inf loss)"
    assert "The training loss became nan at epoch 3, step 7" in f.evidence
    assert any("global_clipnorm" in tip for tip in f.advice)
    assert any("smaller learning rate" in tip for tip in f.advice)


def test_overfitting_undone_by_early_stopping_is_a_note_and_not_healthy(tmp_path):
    kwargs, _ = CASES["overfitting"]
    kwargs = {**kwargs, "accuracy": (0.97, 0.93)}  # the restored model has no large gap
    run = make_run(tmp_path / "r", **kwargs, metrics={"stopped_early": True, "best_epoch": 4})
    findings = diagnose_run(run)
    assert [(f.id, f.severity) for f in findings] == [("overfitting", "info")]
    (f,) = findings
    assert f.title == "Overfitting (handled: early stopping restored epoch 4)"
    assert "lowest at epoch 4" in f.evidence
    assert "so the final model is not affected" in f.why
    text = format_findings(findings)
    assert "Healthy" not in text and "No problem found" not in text


def test_overfitting_with_a_gap_left_after_early_stopping_is_a_warning(tmp_path):
    kwargs, _ = CASES["overfitting"]  # train accuracy 1.0, validation 0.8
    run = make_run(tmp_path / "r", **kwargs, metrics={"stopped_early": True, "best_epoch": 4})
    findings = diagnose_run(run)
    assert [(f.id, f.severity, f.title) for f in findings] == [
        ("overfitting", "warning", "Overfitting")]
    assert "gap 0.200" in findings[0].evidence


def test_healthy_only_when_nothing_fired(tmp_path):
    kwargs, _ = CASES["healthy"]
    (f,) = diagnose_run(make_run(tmp_path / "r", **kwargs))
    assert (f.id, f.severity, f.title) == ("healthy", "info", "Healthy run")
    assert f.evidence.startswith("No problem found: 8 epochs; training loss 2 -> 0.2;")
    assert f.why.endswith("nothing here needs changing.")
    one = diagnose_run(make_run(tmp_path / "one", loss=[2.0], val_loss=[1.9]))
    assert one[0].evidence.startswith("No problem found: 1 epoch; ")


def test_epochs_of_older_runs_counted_from_0_give_the_same_findings(tmp_path):
    for case in ("vanishing", "exploding_growth"):
        kwargs, _ = CASES[case]
        new = diagnose_run(make_run(tmp_path / f"{case}-1", **kwargs))
        old = diagnose_run(make_run(tmp_path / f"{case}-0", **kwargs, first_epoch=0))
        assert [(f.id, f.epoch, f.evidence) for f in old] == [
            (f.id, f.epoch, f.evidence) for f in new]


def test_exploding_growth_names_1_based_epochs(tmp_path):
    kwargs, _ = CASES["exploding_growth"]  # 12 logged steps, 2 per epoch: epochs 1..6
    (f,) = diagnose_run(make_run(tmp_path / "r", **kwargs))
    assert "(epoch 1) to " in f.evidence and "(epoch 6)" in f.evidence
    assert f.epoch == 6


def test_non_finite_weights_stop_is_named(tmp_path):
    run = make_run(tmp_path / "r", loss=[4.5e20], val_loss=[2.3],
                   metrics={"nan_stop": {"epoch": 1, "step": None, "value": "nan",
                                         "restored_epoch": 0, "what": "weights",
                                         "variable": "hidden_0_dense/kernel"}})
    (f,) = diagnose_run(run)
    assert f.title == "Exploding gradients (NaN/Inf weights)"
    assert f.evidence == ("The weights of hidden_0_dense/kernel became nan in epoch 1 and "
                          "training was stopped.")


@pytest.mark.parametrize("activation, variants", [
    ("relu", "--set activation=leaky_relu / elu"),
    ("leaky_relu", "--set activation=elu)"),
    ("elu", "--set activation=leaky_relu)")])
def test_dead_relu_advice_never_recommends_the_activation_in_use(tmp_path, activation,
                                                                  variants):
    kwargs, _ = CASES["dead_relus"]
    (f,) = diagnose_run(make_run(tmp_path / "r", **kwargs, config={"activation": activation}))
    assert f.id == "dead_relus"
    assert variants in f.advice[-1]
    assert f"activation={activation} " not in f.advice[-1]


def test_findings_round_trip_and_text(tmp_path):
    findings = [Finding("x", "warning", "Title", "Seen 1.", "Because.", ["Do a.", "Do b."], 3,
                        {"k": 1.5})]
    write_findings(tmp_path, findings)
    assert read_findings(tmp_path) == findings
    assert json.loads((tmp_path / "findings.json").read_text())[0]["id"] == "x"
    text = format_findings(findings)
    assert "[warning] Title" in text and "- Do a." in text and "- Do b." in text
    assert read_findings(tmp_path / "missing") == []


def test_missing_files_read_as_empty(tmp_path):
    (tmp_path / "run.json").write_text("{}")  # a run directory, every other file missing
    run = read_run(tmp_path)
    assert run.history == {} and not run.grads and run.metrics == {}
    findings = diagnose_run(tmp_path)
    assert [f.id for f in findings] == ["healthy"]


def test_doctor_cli_prints_and_writes_findings(tmp_path):
    kwargs, _ = CASES["vanishing"]
    run = make_run(tmp_path / "r", **kwargs)
    out = run_cli("doctor", str(run))
    assert out.returncode == 0, out.stderr
    assert "[error] Vanishing gradients" in out.stdout
    assert "Use ReLU instead of sigmoid" in out.stdout
    assert read_findings(run)[0].id == "vanishing_gradients"
    as_json = run_cli("doctor", str(run), "--json", "--no-write")
    assert json.loads(as_json.stdout)[0]["id"] == "vanishing_gradients"


def test_doctor_cli_on_a_missing_directory_is_one_line(tmp_path):
    out = run_cli("doctor", str(tmp_path / "nope"))
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"kflow: error: Run directory '{tmp_path / 'nope'}' does not exist.")
