"""`:classify` and `:regress` on SavedModels whose signatures TF Serving reads:

- a TF1-style SavedModel (written with `tf.compat.v1.saved_model.Builder`, as
  Estimator exporters and TF Serving's own test models are) whose signatures
  carry the method names `tensorflow/serving/classify` and
  `tensorflow/serving/regress` and take serialized `tf.Example`s;
- a TF2 SavedModel whose signatures have the same structure but the method name
  the TF2 saver writes (predict): TF Serving checks signatures by structure
  (`PreProcessClassification` in classifier.cc:176, `PreProcessRegression` in
  regressor.cc:170); the method-name check is off by default (server.h:102).
"""

from __future__ import annotations

import numpy as np
import pytest
import requests

from kflow.serve.config import ServerOptions
from kflow.serve.server import ServerThread


def _save_tf1(path: str) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        features = v1.io.parse_example(serialized, {
            "x": tf.io.FixedLenFeature([1], tf.float32),
            "offset": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        x = features["x"]
        y = tf.identity(0.5 * x + 2.0 + features["offset"], name="y")  # half plus two
        p = tf.sigmoid(x)
        scores = tf.concat([1.0 - p, p], axis=1, name="scores")
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(serialized)[0], 1])
        raw_x = v1.placeholder(tf.float32, [None, 1], name="x")
        builder = v1.saved_model.Builder(path)
        with v1.Session(graph=graph) as sess:
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
                "serving_default": v1.saved_model.classification_signature_def(
                    serialized, classes, scores),
                "classify_x_to_y": v1.saved_model.classification_signature_def(
                    serialized, None, y),
                "regress_x_to_y": v1.saved_model.regression_signature_def(serialized, y),
                "predict_x": v1.saved_model.predict_signature_def(
                    {"x": raw_x}, {"y": 0.5 * raw_x + 2.0}),
            })
        builder.save()


def _save_tf2(path: str) -> None:
    import tensorflow as tf

    spec = {"x": tf.io.FixedLenFeature([1], tf.float32)}
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(inputs):
        return {"outputs": 3.0 * tf.io.parse_example(inputs, spec)["x"][:, 0]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(inputs):
        return {"scores": tf.sigmoid(tf.io.parse_example(inputs, spec)["x"])}

    tf.saved_model.save(module, path, signatures={"serving_default": regress,
                                                  "classify": classify})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("tf-signatures")
    _save_tf1(str(base / "tf1" / "1"))
    _save_tf2(str(base / "tf2" / "1"))
    with ServerThread(base, ServerOptions(port=0, poll_seconds=0)) as srv:
        yield srv


def call(server, path: str, body: dict) -> tuple[int, dict]:
    r = requests.post(f"{server.url}/v1/models/{path}", json=body, timeout=60)
    return r.status_code, r.json()


def test_tf1_signature_method_names_are_what_tf_serving_reads(server):
    r = requests.get(f"{server.url}/v1/models/tf1/metadata", timeout=60)
    sigs = r.json()["metadata"]["signature_def"]["signature_def"]
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/classify"
    assert sigs["regress_x_to_y"]["method_name"] == "tensorflow/serving/regress"


def test_tf1_classify_with_classes_and_scores(server):
    status, payload = call(server, "tf1:classify", {"examples": [{"x": 0.0}, {"x": 2.0}]})
    assert status == 200, payload
    (neg0, pos0), (neg1, pos1) = payload["results"]
    assert neg0[0] == "neg" and pos0[0] == "pos"
    np.testing.assert_allclose([neg0[1], pos0[1]], [0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(pos1[1], 1 / (1 + np.exp(-2.0)), rtol=1e-6)


def test_tf1_classify_with_scores_only(server):
    status, payload = call(server, "tf1:classify", {"signature_name": "classify_x_to_y",
                                                    "examples": [{"x": 2.0}]})
    assert status == 200 and payload == {"results": [[["", 3.0]]]}


def test_tf1_regress_with_context(server):
    status, payload = call(server, "tf1:regress", {
        "signature_name": "regress_x_to_y", "context": {"offset": 10.0},
        "examples": [{"x": 2.0}, {"x": 4.0, "offset": 0.0}]})
    assert status == 200 and payload == {"results": [13.0, 4.0]}


def test_tf1_predict_signature(server):
    status, payload = call(server, "tf1:predict", {"signature_name": "predict_x",
                                                   "instances": [[2.0]]})
    assert status == 200 and payload == {"predictions": [[3.0]]}


def test_tf1_wrong_signature_kind_uses_tf_serving_messages(server):
    status, payload = call(server, "tf1:regress", {"examples": [{"x": 1.0}]})
    assert status == 400 and payload == {"error": "Expected one output Tensor."}  # regressor.cc:183
    status, payload = call(server, "tf1:classify", {"signature_name": "predict_x",
                                                    "examples": [{"x": 1.0}]})
    assert status == 400 and payload["error"].startswith(
        "No classification inputs found in SignatureDef: ")  # classifier.cc:197


def test_tf2_signatures_with_the_predict_method_name(server):
    status, payload = call(server, "tf2:regress", {"examples": [{"x": 2.0}]})
    assert status == 200 and payload == {"results": [6.0]}
    status, payload = call(server, "tf2:classify", {"signature_name": "classify",
                                                    "examples": [{"x": 0.0}]})
    assert status == 200 and payload == {"results": [[["", 0.5]]]}
