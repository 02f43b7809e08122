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
          ("hidden_1_dense", "Dense"),
          # recurrent layers as kflow's blocks name them (Keras cells are logged as `Layer`)
          ("rnn_0/simple_rnn_cell", "Layer"), ("lstm_0/lstm_cell", "Layer"),
          ("bigru_0", "Bidirectional"),
          ("probabilities", "Dense")]


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


def _spike(n=12, at=7, value=200.0):
    """Norms of 1 with one spike of `value` (total: 142x its median, between the thresholds
    for recurrent nets, 1e2, and other nets, 1e3)."""
    return [value if i == at else 1.0 for i in range(n)]


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
    # A SimpleRNN whose total gradient norm spikes 200x its median in one step: the
    # recurrent "cliff" (an MLP with the same spike is not flagged, see below).
    "exploding_recurrent": (dict(loss=[2.0, 1.8, 1.7, 1.6, 1.55, 1.5],
                                 val_loss=[2.0, 1.8, 1.7, 1.6, 1.55, 1.5],
                                 grads={"rnn_0/simple_rnn_cell": _spike(),
                                        "probabilities": _spike(value=20.0)}),
                            {"exploding_gradients"}),
    "vanishing_recurrent": (dict(loss=[2.30, 2.30, 2.29, 2.29, 2.29], val_loss=[2.3] * 5,
                                 grads={"lstm_0/lstm_cell": [1e-9] * 10,
                                        "probabilities": [0.5] * 10}),
                            {"vanishing_gradients"}),
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


# -- the recurrent case of exploding/vanishing gradients ---------------------------------


def _set_model(run, **settings):
    """Adds model settings (e.g. digits-rnn's `cell`) to a `make_run` directory's config."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"].update(settings)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run


def test_recurrent_layers_are_recognized_by_name_or_kind():
    layers = ["rnn_0/simple_rnn_cell", "lstm_1", "bigru_0", "forward_lstm_0/lstm_cell",
              "encoder_1/attention", "hidden_0_dense", "conv1_conv", "probabilities",
              "my_recurrent"]
    kinds = {"my_recurrent": "LSTM", "bigru_0": "Bidirectional"}
    assert doctor.recurrent_layers(layers, kinds) == [
        "rnn_0/simple_rnn_cell", "lstm_1", "bigru_0", "forward_lstm_0/lstm_cell",
        "my_recurrent"]
    assert doctor.recurrent_layers(["hidden_0_dense", "group_norm", "probabilities"], {}) == []


def test_exploding_simple_rnn_advice_is_clipping_then_lstm_gru_then_shorter(tmp_path):
    kwargs, _ = CASES["exploding_recurrent"]
    run = _set_model(make_run(tmp_path / "r", **kwargs, config={"learning_rate": 0.5}),
                     cell="rnn")
    (f,) = diagnose_run(run)
    assert f.id == "exploding_gradients"
    assert "reached 201 at step 71 (epoch 4), 142x its median" in f.evidence
    assert "backpropagation through time" in f.why
    assert f.advice[0].startswith("Clip the gradients (--set global_clipnorm=1.0)")
    assert "rnn_0/simple_rnn_cell" in f.advice[0]
    assert "--set learning_rate=0.05" in f.advice[1]
    assert any("LSTM or GRU cells instead of SimpleRNN (--set cell=lstm or --set cell=gru)"
               in tip for tip in f.advice)
    assert any("shorter sequences" in tip for tip in f.advice)
    assert f.data["recurrent_layers"] == ["rnn_0/simple_rnn_cell"]


def test_the_same_spike_in_an_mlp_is_not_exploding(tmp_path):
    kwargs, _ = CASES["exploding_recurrent"]
    grads = {"hidden_0_dense": _spike(), "probabilities": _spike(value=20.0)}
    findings = diagnose_run(make_run(tmp_path / "r", **{**kwargs, "grads": grads}))
    assert [f.id for f in findings] == ["healthy"]
    assert doctor.EXPLODING_SPIKE_RECURRENT < 142 < doctor.EXPLODING_SPIKE


def test_exploding_lstm_with_clipping_on_says_clip_lower_and_keeps_the_cell(tmp_path):
    grads = {"lstm_0/lstm_cell": _decay(1, 1e4, 12), "probabilities": _decay(1, 1e4, 12)}
    run = make_run(tmp_path / "r", loss=[2.0, 1.9, 1.85, 1.8, 1.78, 1.75],
                   val_loss=[2.0, 1.9, 1.9, 1.8, 1.8, 1.7], grads=grads,
                   config={"global_clipnorm": 1.0})
    (f,) = diagnose_run(_set_model(run, cell="lstm"))
    assert f.id == "exploding_gradients"
    assert f.advice[0].startswith("Clipping is on (global_clipnorm=1)")
    assert "--set global_clipnorm=0.5" in f.advice[0]
    assert not any("instead of SimpleRNN" in tip for tip in f.advice)
    assert any("shorter sequences" in tip for tip in f.advice)


def test_exploding_rnn_known_from_the_config_alone(tmp_path):
    """A NaN loss without gradient logs: the config's `cell` says it is recurrent."""
    kwargs, _ = CASES["exploding_nan"]
    run = make_run(tmp_path / "r", **{**kwargs, "grads": None})
    (f,) = diagnose_run(_set_model(run, cell="rnn"))
    assert f.title == "Exploding gradients (NaN/Inf loss)"
    assert f.advice[0].startswith("Clip the gradients (--set global_clipnorm=1.0): in a "
                                  "recurrent network (SimpleRNN)")
    assert any("--set cell=lstm" in tip for tip in f.advice)


def test_vanishing_in_a_recurrent_net_suggests_gates_and_shorter_sequences(tmp_path):
    kwargs, _ = CASES["vanishing_recurrent"]
    run = make_run(tmp_path / "r", **kwargs, config={"activation": "tanh"})
    (f,) = diagnose_run(_set_model(run, window=48))
    assert f.id == "vanishing_gradients" and "lstm_0/lstm_cell" in f.evidence
    text = " ".join(f.advice)
    assert "--set window=24" in text and "shorter sequences" in text
    assert "instead of SimpleRNN" not in text  # it is an LSTM already
    assert "ReLU instead of" not in text  # the MLP advice does not apply
    assert "backpropagation through time" in f.why
    simple = make_run(tmp_path / "s", **{**kwargs, "grads": {
        "rnn_0/simple_rnn_cell": [1e-9] * 10, "probabilities": [0.5] * 10}})
    (g,) = diagnose_run(simple)
    assert any("LSTM or GRU cells instead of SimpleRNN" in tip for tip in g.advice)


def test_mlp_advice_is_unchanged_by_the_recurrent_case(tmp_path):
    kwargs, _ = CASES["exploding_growth"]
    (f,) = diagnose_run(make_run(tmp_path / "r", **kwargs))
    assert f.advice[0].startswith("Use a smaller learning rate")
    assert not any("SimpleRNN" in tip or "sequences" in tip for tip in f.advice)
    assert "recurrent_layers" not in f.data
