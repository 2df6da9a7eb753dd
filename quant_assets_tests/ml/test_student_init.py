"""Fine-tuning the student from a trained one (`init_from`): its weights and units, checked shapes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from quant_assets.ml.train_student import predict, save_npz, train
from quant_assets_tests.ml.test_train_student import FEATURES, config, make_inputs, weights


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One trained student for the module's tests (each writes only beside it)."""
    d = tmp_path_factory.mktemp("base")
    path = d / "inputs.npz"
    save_npz(make_inputs(seed=11), path)
    manifest = train(config(d, "base", path, steps=60, lr=3e-3, text_dropout=0.0))
    return path, d / "base", manifest


def test_zero_steps_from_a_student_reproduce_its_weights_and_predictions(tmp_path, trained):
    path, base, manifest = trained
    again = train(config(tmp_path, "again", path, steps=0, init_from=str(base)))
    assert again["weights_sha256"] == manifest["weights_sha256"]
    assert again["init_weights_sha256"] == manifest["weights_sha256"]
    assert again["init_from"] == str(base) and manifest["init_from"] is None
    for k, v in weights(base).items():
        assert (weights(tmp_path / "again")[k] == v).all(), k
    inputs = make_inputs(seed=11)
    np.testing.assert_array_equal(predict(tmp_path / "again", inputs), predict(base, inputs))


def test_fine_tuning_starts_where_the_student_left_off(tmp_path, trained):
    """New rows of the same market: the fine-tuned run's first losses are those of a trained model,
    well below a fresh model's, and its weights move from the initial ones."""
    _, base, manifest = trained
    fresh_rows = tmp_path / "new.npz"
    save_npz(make_inputs(seed=12), fresh_rows)
    tuned = train(
        config(tmp_path, "tuned", fresh_rows, steps=10, lr=1e-3, text_dropout=0.0, init_from=str(base))
    )
    scratch = train(config(tmp_path, "scratch", fresh_rows, steps=10, lr=1e-3, text_dropout=0.0))
    first_tuned = np.mean([loss for _, loss in tuned["loss"][:3]])
    first_scratch = np.mean([loss for _, loss in scratch["loss"][:3]])
    assert first_tuned < 0.8 * first_scratch, (tuned["loss"][:3], scratch["loss"][:3])
    assert tuned["weights_sha256"] not in (manifest["weights_sha256"], scratch["weights_sha256"])


def test_a_student_of_other_columns_or_coins_is_refused_naming_the_difference(tmp_path, trained):
    _, base, _ = trained
    inp = make_inputs(seed=11)
    other = tmp_path / "other.npz"
    names = (*FEATURES[:-1], "event_decay_24h")
    save_npz(dataclasses.replace(inp, feature_names=names), other)
    with pytest.raises(ValueError, match="feature columns .*event_decay_24h"):
        train(config(tmp_path, "x", other, init_from=str(base)))
    coins = tmp_path / "coins.npz"
    save_npz(make_inputs(seed=11, coins=("BTCUSDT", "SOLUSDT")), coins)
    with pytest.raises(ValueError, match="coins"):
        train(config(tmp_path, "y", coins, init_from=str(base)))
