"""make_dataset: both batching paths deliver the same rows, shuffled per epoch."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kflow.data.pipeline import ROW_SLICING_LIMIT, make_dataset  # noqa: E402

N = 1000


def _data(columns: bool):
    rng = np.random.RandomState(0)
    ids = np.arange(N)
    if columns:
        x = {"id": ids.astype("float32"), "twice": (2 * ids).astype("float32"),
             "label": np.array([f"r{i}" for i in ids])}
    else:
        x = np.stack([ids, 2 * ids], axis=1).astype("float32") + rng.uniform(0, 0.1, (N, 2))
    return x, ids.astype("int64")


def _epoch(ds, columns: bool):
    xs, ys = [], []
    for bx, by in ds:
        xs.append(bx["id"].numpy() if columns else np.floor(bx[:, 0].numpy()))
        ys.append(by.numpy())
        if columns:
            np.testing.assert_array_equal(bx["twice"].numpy(), 2 * bx["id"].numpy())
            assert [s.decode() for s in bx["label"].numpy()] == [f"r{int(i)}" for i in xs[-1]]
    return np.concatenate(xs), np.concatenate(ys), [len(y) for y in ys]


@pytest.mark.parametrize("columns", [False, True])
@pytest.mark.parametrize("batch_size", [16, 300])  # 16: rows are sliced; 300: batches gathered
def test_training_epochs_are_seeded_permutations_of_aligned_rows(columns, batch_size):
    x, y = _data(columns)
    parts = 4 if columns else 2
    assert (batch_size * parts <= ROW_SLICING_LIMIT) == (batch_size == 16)
    ds = make_dataset(x, y, batch_size, training=True, seed=3)
    first_x, first_y, sizes = _epoch(ds, columns)
    second_x, second_y, _ = _epoch(ds, columns)
    np.testing.assert_array_equal(first_x, first_y)  # features stay with their labels
    assert sorted(first_y) == list(range(N)) and sorted(second_y) == list(range(N))
    assert not np.array_equal(first_y, second_y)  # a new order every epoch
    assert not np.array_equal(first_y, np.arange(N))
    assert sizes[:-1] == [batch_size] * (len(sizes) - 1) and sum(sizes) == N
    again, _, _ = _epoch(make_dataset(x, y, batch_size, training=True, seed=3), columns)
    np.testing.assert_array_equal(again, first_x)  # same seed, same first epoch


@pytest.mark.parametrize("batch_size", [16, 300])
def test_evaluation_keeps_the_row_order_and_caches(batch_size):
    x, y = _data(False)
    ds = make_dataset(x, y, batch_size, training=False)
    for _ in range(2):
        got_x, got_y, _ = _epoch(ds, False)
        np.testing.assert_array_equal(got_y, np.arange(N))
        np.testing.assert_array_equal(got_x, np.arange(N))
    only_x = make_dataset(x, None, batch_size, training=False)
    np.testing.assert_allclose(np.concatenate([b.numpy() for b in only_x]), x)


@pytest.mark.parametrize("batch_size", [16, 300])  # both batching paths
def test_an_epochs_order_is_a_pure_function_of_seed_and_epoch(batch_size):
    from kflow.data.pipeline import EpochKey, epoch_order

    x, y = _data(False)
    key = EpochKey()
    ds = make_dataset(x, y, batch_size, training=True, seed=3, epoch=key)
    orders = []
    for epoch in (0, 1, 2):
        key.set(epoch)
        orders.append(_epoch(ds, False)[1])
    # A new pipeline (a restarted process) set to epoch 2 draws epoch 2's order at once.
    fresh = make_dataset(x, y, batch_size, training=True, seed=3, epoch=EpochKey(2))
    np.testing.assert_array_equal(_epoch(fresh, False)[1], orders[2])
    np.testing.assert_array_equal(orders[1], epoch_order(N, 3, 1).numpy())
    assert not np.array_equal(orders[0], orders[1])
    # Without a key the pipeline counts its passes: pass k draws epoch k.
    counted = make_dataset(x, y, batch_size, training=True, seed=3)
    for epoch in (0, 1):
        np.testing.assert_array_equal(_epoch(counted, False)[1], orders[epoch])
    fixed = make_dataset(x, y, batch_size, training=True, seed=3, epoch=1)
    for _ in range(2):
        np.testing.assert_array_equal(_epoch(fixed, False)[1], orders[1])
    other_seed = make_dataset(x, y, batch_size, training=True, seed=4, epoch=EpochKey(1))
    assert not np.array_equal(_epoch(other_seed, False)[1], orders[1])


def test_the_epoch_key_follows_fit_and_keeps_the_length_known():
    import keras

    from kflow.data.pipeline import EpochKey

    x, y = _data(False)
    key, seen = EpochKey(), []
    ds = make_dataset(x, y, 300, training=True, seed=0, epoch=key)
    assert int(ds.cardinality()) == 4  # Keras' progress bar and strategies need it
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    spy = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs=None: seen.append(key.epoch))
    model.fit(ds, epochs=5, initial_epoch=2, verbose=0, callbacks=[key.callback(), spy])
    assert seen == [2, 3, 4]


@pytest.mark.parametrize("columns", [False, True])
@pytest.mark.parametrize("batch_size", [16, 300])
def test_the_epoch_stream_is_the_epochs_one_after_another(columns, batch_size):
    x, y = _data(columns)
    stream = make_dataset(x, y, batch_size, training=True, seed=3, first_epoch=2)
    steps = -(-N // batch_size)
    batches = list(stream.take(3 * steps))
    for k, epoch in enumerate((2, 3, 4)):
        one = make_dataset(x, y, batch_size, training=True, seed=3, epoch=epoch)
        got = _epoch(batches[k * steps:(k + 1) * steps], columns)
        want = _epoch(one, columns)
        np.testing.assert_array_equal(got[1], want[1])  # the same rows, same order
        assert got[2] == want[2]  # and the same batches (the last one partial)
    assert stream.cardinality().numpy() == tf.data.INFINITE_CARDINALITY


def test_auto_steps_per_execution_divides_the_epoch_where_it_can():
    from kflow.training.trainer import auto_steps_per_execution as auto

    assert [auto(s) for s in (1, 8, 31, 32, 33, 40, 64, 100, 1000)] == [
        1, 8, 31, 32, 11, 20, 32, 25, 25]
    assert [auto(s) for s in (37, 394, 2188)] == [32, 32, 32]  # no divisor in 8..32
    assert auto(40, cap=10) == 10 and auto(7, cap=5) == 5 and auto(40, cap=1) == 1
