"""FeatureConfig: frozen, a stable hash of the feature fields only, a checked JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from msc_core.config import FEATURE_ALGORITHM, PAPER, FeatureConfig, WindowPolicy, require_same_features
from msc_core.errors import FeatureConfigMismatchError, MscError

#: The paper config's hash. Changing it invalidates every shard and model made so far:
#: update this literal only together with FEATURE_ALGORITHM or a deliberate field change.
PAPER_HASH = "a32fb36a98ae7223"

#: A different valid value for every hashed field (frames kept consistent where it must follow).
FEATURE_CHANGES = {
    "sample_rate": dict(sample_rate=16000, frames=int(16000 * 5.0 / 512)),
    "window_seconds": dict(window_seconds=3.0, frames=int(22050 * 3.0 / 512)),
    "n_fft": dict(n_fft=1024),
    "hop_length": dict(hop_length=256, frames=int(22050 * 5.0 / 256)),
    "n_mels": dict(n_mels=64),
    "top_db": dict(top_db=60.0),
    "layers": dict(layers=4),
    "colormap": dict(colormap="magma"),
}


def test_paper_defaults_match_preprocessing_md():
    assert (PAPER.sample_rate, PAPER.window_seconds, PAPER.n_fft, PAPER.hop_length) == (22050, 5.0, 2048, 512)
    assert (PAPER.n_mels, PAPER.top_db, PAPER.frames, PAPER.layers, PAPER.colormap) == (128, 80.0, 215, 8, "viridis")
    assert PAPER.window_samples == 110_250
    assert PAPER.tensor_shape == (8, 128, 215, 1)
    assert PAPER.encoded_shape == (128, 215)


def test_config_and_window_policy_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PAPER.n_mels = 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        PAPER.window.mode = "first"


def test_paper_hash_is_pinned():
    assert PAPER.hash == PAPER_HASH
    assert FeatureConfig().hash == PAPER_HASH


def test_hash_ignores_window_policy():
    for policy in (dict(mode="first"), dict(hop_seconds=2.5), dict(min_last_seconds=0.0)):
        other = PAPER.with_window(**policy)
        assert other.window != PAPER.window
        assert other.hash == PAPER_HASH


@pytest.mark.parametrize("field", sorted(FEATURE_CHANGES))
def test_hash_changes_with_every_feature_field(field):
    changed = dataclasses.replace(PAPER, **FEATURE_CHANGES[field])
    assert changed.hash != PAPER_HASH


def test_every_hashed_field_is_covered_by_a_change():
    hashed = set(PAPER.feature_dict()) - {"algorithm", "frames"}
    assert hashed == set(FEATURE_CHANGES)


def test_json_round_trip_keeps_fields_policy_and_hash():
    config = dataclasses.replace(PAPER, n_mels=64).with_window(mode="all", hop_seconds=2.5, min_last_seconds=1.0)
    text = config.to_json()
    payload = json.loads(text)
    assert payload["hash"] == config.hash
    assert payload["algorithm"] == FEATURE_ALGORITHM
    again = FeatureConfig.from_json(text)
    assert again == config
    assert again.hash == config.hash
    assert FeatureConfig.from_json(text.encode()) == config


def test_json_with_tampered_hash_is_refused():
    payload = json.loads(PAPER.to_json())
    payload["n_mels"] = 64  # fields edited, stored hash left as it was
    with pytest.raises(FeatureConfigMismatchError, match="does not match"):
        FeatureConfig.from_json(json.dumps(payload))


def test_json_from_another_algorithm_is_refused():
    payload = json.loads(PAPER.to_json())
    payload["algorithm"] = "depth-layers-v0"
    with pytest.raises(FeatureConfigMismatchError, match="depth-layers-v0"):
        FeatureConfig.from_json(json.dumps(payload))


def test_require_same_features_accepts_equal_configs_and_hashes():
    require_same_features(PAPER, PAPER.with_window(mode="first"), what="model vs shards")
    require_same_features(PAPER_HASH, PAPER, what="model vs shards")


def test_require_same_features_refuses_a_mismatch_clearly():
    other = dataclasses.replace(PAPER, n_mels=64)
    with pytest.raises(FeatureConfigMismatchError) as caught:
        require_same_features(PAPER, other, what="model /m vs shards /s")
    message = str(caught.value)
    assert "model /m vs shards /s" in message
    assert other.hash in message and PAPER_HASH in message
    assert isinstance(caught.value, MscError)


def test_frames_must_follow_rate_window_and_hop():
    with pytest.raises(ValueError, match="215"):
        FeatureConfig(frames=216)
    with pytest.raises(ValueError, match="frames"):
        FeatureConfig(hop_length=256)


@pytest.mark.parametrize("policy", [dict(mode="middle"), dict(hop_seconds=0), dict(hop_seconds=-1.0),
                                    dict(min_last_seconds=-0.5)])
def test_window_policy_is_validated(policy):
    with pytest.raises(ValueError):
        WindowPolicy(**policy)


def test_hop_samples_follow_the_policy():
    assert PAPER.hop_samples == PAPER.window_samples
    assert PAPER.with_window(hop_seconds=2.5).hop_samples == 55_125
