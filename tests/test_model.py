"""The CNN, its compact-code decode stage, the model directory format and the paper import."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from msc_core import depth
from msc_core.config import CLASSES, PAPER
from msc_core.errors import FeatureConfigMismatchError, ModelLoadError, ParameterError
from msc_core.model import (LABELS, MscModel, architecture, build_cnn, build_model, check_model_dir, decode_stage,
                            folded_forward, import_paper_model, load_model_dir, save_model_dir, set_temperature)


@pytest.fixture(scope="module")
def imported_dir(paper_model_dir, tmp_path_factory) -> Path:
    """The published model (conftest's ``paper_model_dir``) imported as an msc model directory."""
    out = tmp_path_factory.mktemp("models") / "paper"
    import_paper_model(paper_model_dir, out)
    return out


@pytest.fixture(scope="module")
def golden(golden_dir) -> dict[str, dict[str, np.ndarray]]:
    """Reference arrays of every golden input, by file stem."""
    return {path.stem: dict(np.load(path)) for path in sorted(golden_dir.glob("*.npz"))}


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    """A small seeded model saved as if trained."""
    out = tmp_path_factory.mktemp("models") / "small"
    save_model_dir(build_model(PAPER, widths=(4, 8, 8), seed=0), PAPER, out, source="trained",
                   extra={"epochs": 0})
    return out


def random_codes(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *PAPER.encoded_shape), dtype=np.uint8)


def tampered(model_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of ``model_dir`` to break."""
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    return copy


# ------------------------------------------------------------------------------------------- architecture
def test_cnn_has_the_published_architecture(paper_model_dir):
    published = keras.models.model_from_json((paper_model_dir / "config.json").read_text())
    cnn = build_cnn(PAPER)
    assert architecture(cnn) == architecture(published)
    assert cnn.count_params() == published.count_params() == pytest.approx(303_000, rel=0.01)
    assert cnn.input_shape == (None, *PAPER.tensor_shape) and cnn.output_shape == (None, 2)


def test_seed_makes_weights_reproducible():
    first, second = build_cnn(PAPER, widths=(4, 8, 8), seed=7), build_cnn(PAPER, widths=(4, 8, 8), seed=7)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert architecture(first) == architecture(build_cnn(PAPER, widths=(4, 8, 8)))


def test_model_reads_codes_through_builtin_layers_only():
    model = build_model(PAPER, widths=(4, 8, 8), seed=0)
    assert model.input_shape == (None, *PAPER.encoded_shape) and model.input.dtype == "uint8"
    assert model.output_shape == (None, len(LABELS))
    assert [layer.name for layer in model.layers[1:]] == ["decode", "cnn"]
    table = model.get_layer("decode").get_layer("depth_table")
    assert not table.trainable and not table.trainable_weights
    nested = [inner for layer in model.layers for inner in getattr(layer, "layers", [layer])]
    assert all(type(layer).__module__.startswith("keras.") for layer in nested)


# ------------------------------------------------------------------------------------------- decode stage
def test_decode_stage_is_exact_on_random_codes():
    codes = np.concatenate([random_codes(3), np.arange(256, dtype=np.uint8).repeat(108)[:27_520]
                            .reshape(1, *PAPER.encoded_shape)])
    dense = decode_stage(PAPER)(codes).numpy()
    expected = depth.decode(codes, PAPER)
    assert dense.dtype == np.float32 and dense.shape == (4, *PAPER.tensor_shape)
    assert dense.tobytes() == expected.tobytes()


def test_decode_stage_rebuilds_golden_depth_bit_for_bit(golden):
    normalized = np.stack([reference["normalized"] for reference in golden.values()])
    dense = decode_stage(PAPER)(depth.encode(normalized)).numpy()
    assert dense.tobytes() == np.stack([reference["depth"] for reference in golden.values()]).tobytes()


def test_decode_stage_follows_the_colormap():
    magma = dataclasses.replace(PAPER, colormap="magma")
    codes = random_codes(2)
    assert decode_stage(magma)(codes).numpy().tobytes() == depth.decode(codes, magma).tobytes()


# ------------------------------------------------------------------------------------------- paper import
def test_imported_paper_model_reproduces_published_probabilities(imported_dir, golden):
    model = load_model_dir(imported_dir, expected_config=PAPER)
    codes = np.stack([depth.encode(reference["normalized"]) for reference in golden.values()])
    expected = np.stack([reference["paper_model_probs"] for reference in golden.values()])
    probs = model.predict_codes(codes, batch_size=2)
    assert probs.dtype == np.float32 and probs.shape == (len(golden), 2) == expected.shape
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    assert model.metadata["source"] == "paper-import"
    assert model.metadata["widths"] == [32, 64, 128] and model.metadata["dense"] == [128, 64]
    assert model.model_id.startswith("paper-import-")


def test_imported_paper_model_from_audio_end_to_end(imported_dir, golden, golden_dir):
    from msc_core.audio import read_windows

    model = load_model_dir(imported_dir)
    first_window = PAPER.with_window(mode="first")
    for stem, reference in golden.items():
        (source,) = (golden_dir / "inputs").glob(f"{stem}.*")
        (batch,) = list(read_windows(source, first_window))
        probs = model.predict_codes(depth.featurize(batch.samples, PAPER))
        np.testing.assert_allclose(probs[0], reference["paper_model_probs"], atol=1e-4, err_msg=source.name)


def test_import_refuses_missing_files(tmp_path):
    with pytest.raises(ModelLoadError, match="missing config.json, model.weights.h5"):
        import_paper_model(tmp_path, tmp_path / "out")


def test_import_refuses_another_architecture(tmp_path):
    narrow = tmp_path / "narrow.keras"
    build_cnn(PAPER, widths=(4, 8, 8)).save(narrow)
    shutil.unpack_archive(narrow, tmp_path / "published", format="zip")
    with pytest.raises(ModelLoadError, match="architecture differs"):
        import_paper_model(tmp_path / "published", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- model directory
def test_round_trip_gives_identical_predictions(tmp_path):
    built = build_model(PAPER, widths=(4, 8, 8), seed=1)
    saved = save_model_dir(built, PAPER, tmp_path / "m", source="trained", extra={"epochs": 3})
    loaded = load_model_dir(tmp_path / "m", expected_config=PAPER)
    codes = random_codes(3)
    np.testing.assert_array_equal(loaded.predict_codes(codes), saved.predict_codes(codes))
    assert loaded.model_id == saved.model_id and loaded.model_id.startswith("trained-")
    assert loaded.config == PAPER
    assert loaded.metadata["extra"] == {"epochs": 3} and loaded.metadata["labels"] == list(LABELS)
    assert loaded.metadata["feature_hash"] == PAPER.hash and loaded.metadata["widths"] == [4, 8, 8]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m"]  # no staging left behind


def test_model_id_depends_only_on_weights(tmp_path):
    first = save_model_dir(build_model(PAPER, widths=(4, 8, 8), seed=2), PAPER, tmp_path / "a", source="trained")
    again = save_model_dir(build_model(PAPER, widths=(4, 8, 8), seed=2), PAPER, tmp_path / "b", source="trained")
    other = save_model_dir(build_model(PAPER, widths=(4, 8, 8), seed=3), PAPER, tmp_path / "c", source="trained")
    assert first.model_id == again.model_id != other.model_id


def test_save_refuses_existing_directory_and_wrong_models(tmp_path, trained_dir):
    with pytest.raises(FileExistsError):
        save_model_dir(build_model(PAPER, widths=(4, 8, 8)), PAPER, trained_dir, source="trained")
    with pytest.raises(ValueError, match="input is"):
        save_model_dir(build_cnn(PAPER, widths=(4, 8, 8)), PAPER, tmp_path / "dense", source="trained")


def test_predict_codes_traces_once_and_checks_input(trained_dir):
    model = load_model_dir(trained_dir)
    codes = random_codes(5)
    one_by_one = np.concatenate([model.predict_codes(codes[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(model.predict_codes(codes, batch_size=2), one_by_one, atol=1e-6)
    assert model.predict_codes(codes[:0]).shape == (0, 2)
    assert model._forward.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(one_by_one.sum(axis=1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="uint8 codes"):
        model.predict_codes(codes.astype(np.int32))
    with pytest.raises(ValueError, match="uint8 codes"):
        model.predict_codes(codes[0])


def test_load_refuses_other_features(trained_dir):
    with pytest.raises(FeatureConfigMismatchError):
        load_model_dir(trained_dir, expected_config=dataclasses.replace(PAPER, colormap="magma"))
    with pytest.raises(FeatureConfigMismatchError):
        load_model_dir(trained_dir, expected_config=dataclasses.replace(PAPER, n_mels=64))
    assert isinstance(load_model_dir(trained_dir, expected_config=PAPER.with_window(mode="first")), MscModel)


@pytest.mark.parametrize("name", ["model.keras", "feature_config.json", "model.json"])
def test_load_refuses_missing_files(trained_dir, tmp_path, name):
    broken = tampered(trained_dir, tmp_path)
    (broken / name).unlink()
    with pytest.raises(ModelLoadError, match=f"missing {name}"):
        load_model_dir(broken)


def test_load_refuses_no_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model directory"):
        load_model_dir(tmp_path / "absent")


def test_load_refuses_corrupt_archive(trained_dir, tmp_path):
    broken = tampered(trained_dir, tmp_path)
    data = (broken / "model.keras").read_bytes()
    (broken / "model.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="cannot be loaded safely"):
        load_model_dir(broken)


def test_load_refuses_inconsistent_metadata(trained_dir, tmp_path):
    broken = tampered(trained_dir, tmp_path)
    metadata = json.loads((broken / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps({**metadata, "feature_hash": "0" * 16}))
    with pytest.raises(ModelLoadError, match="feature hash"):
        load_model_dir(broken)
    (broken / "model.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_model_dir(broken)


def test_load_refuses_wrong_output_shape(trained_dir, tmp_path):
    broken = tampered(trained_dir, tmp_path)
    codes = keras.Input(PAPER.encoded_shape, dtype="uint8")
    three_way = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(decode_stage(PAPER)(codes)))
    keras.Model(codes, three_way).save(broken / "model.keras")
    with pytest.raises(ModelLoadError, match=r"output shape is \(None, 3\)"):
        load_model_dir(broken)


def test_load_refuses_lambda_layers(trained_dir, tmp_path):
    broken = tampered(trained_dir, tmp_path)
    codes = keras.Input(PAPER.encoded_shape, dtype="uint8")
    scaled = keras.layers.Lambda(lambda x: keras.ops.cast(x, "float32") / 255.0)(codes)
    probs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(scaled))
    keras.Model(codes, probs).save(broken / "model.keras")
    with pytest.raises(ModelLoadError, match="Lambda"):
        load_model_dir(broken)


@pytest.mark.parametrize("temperature", [-1, 0, float("nan"), float("inf"), "2", True])
def test_load_refuses_bad_calibration_temperatures(trained_dir, tmp_path, temperature):
    broken = tampered(trained_dir, tmp_path)
    metadata = json.loads((broken / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps({**metadata, "calibration": {"temperature": temperature}}))
    for check in (load_model_dir, check_model_dir):
        with pytest.raises(ModelLoadError, match="temperature must be a finite number > 0"):
            check(broken)
    with pytest.raises(ValueError, match="finite number"):
        set_temperature(trained_dir, temperature=float("inf"), fitted_on={})


def test_load_refuses_bad_metadata_types(trained_dir, tmp_path):
    broken = tampered(trained_dir, tmp_path)
    metadata = json.loads((broken / "model.json").read_text())
    for bad in ({"model_id": 7}, {"widths": [4, -8, 8]}, {"dense": "big"}, {"labels": ["music", "speech"]},
                {"labels": ["speech", "laughter"]}, {"labels": ["speech"]}):
        (broken / "model.json").write_text(json.dumps({**metadata, **bad}))
        with pytest.raises(ModelLoadError, match="model_id|widths|dense|labels must be"):
            load_model_dir(broken)
    # labels the model's outputs do not match: the archive has 2 outputs
    (broken / "model.json").write_text(json.dumps({**metadata, "labels": ["speech", "music", "noise"]}))
    with pytest.raises(ModelLoadError, match=r"expected \(None, 3\)"):
        load_model_dir(broken)


def test_load_refuses_huge_declared_layers_before_building_them(trained_dir, tmp_path):
    import zipfile

    broken = tampered(trained_dir, tmp_path)
    with zipfile.ZipFile(trained_dir / "model.keras") as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    config = json.loads(members["config.json"])
    text = json.dumps(config).replace('"units": 2,', '"units": 2000000000,', 1)
    assert text != json.dumps(config)
    members["config.json"] = text.encode()
    with zipfile.ZipFile(broken / "model.keras", "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    assert (broken / "model.keras").stat().st_size < 1_000_000
    for check in (load_model_dir, check_model_dir):
        with pytest.raises(ModelLoadError, match="GiB of weights.*refused before loading"):
            check(broken)


def test_checking_a_model_loads_neither_keras_nor_tensorflow(trained_dir):
    """What a job's driver does to refuse a bad model (msc infer; msc models info) costs no TensorFlow import."""
    import subprocess
    import sys

    code = ("import sys; from msc_core.model import check_model_dir; from msc_core.report import model_facts; "
            f"metadata, config = check_model_dir({str(trained_dir)!r}); model_facts({str(trained_dir)!r}); "
            "import jobs.cli, jobs.infer; "
            "print(metadata['model_id'], sorted(name for name in ('keras', 'tensorflow') if name in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [json.loads((trained_dir / "model.json").read_text())["model_id"], "[]"]


def test_folded_batchnorm_computes_the_same_function():
    model = build_model(PAPER, widths=(4, 6, 8), dense=(8, 6), outputs=4, seed=3)
    rng = np.random.default_rng(0)
    norms = [layer for layer in model.get_layer("cnn").layers if isinstance(layer, keras.layers.BatchNormalization)]
    for norm in norms:
        size = norm.get_weights()[0].shape
        norm.set_weights([rng.uniform(0.5, 2, size), rng.normal(0, 0.5, size), rng.normal(0, 0.1, size),
                          rng.uniform(1e-3, 1e-2, size)])  # activations' variances are near 1e-3
    codes = rng.integers(0, depth.COLORMAP_SIZE, (5, *PAPER.encoded_shape)).astype(np.uint8)
    want = model(codes, training=False).numpy()
    np.testing.assert_allclose(folded_forward(model)(codes).numpy(), want, atol=1e-5)
    np.testing.assert_allclose(MscModel(model, PAPER, {"model_id": "m", "labels": list(CLASSES)}).predict_codes(codes),
                               want, atol=1e-5)
    # bfloat16 convolutions (8 bits of mantissa): close to float32, not equal; any CPU computes them
    plain = build_model(PAPER, widths=(4, 6, 8), dense=(8, 6), outputs=4, seed=3)  # outputs far from 0 and 1
    fp32 = plain(codes, training=False).numpy()
    bf16 = MscModel(plain, PAPER, {"model_id": "m", "labels": list(CLASSES)}).with_precision("bf16")
    got = bf16.predict_codes(codes)
    np.testing.assert_allclose(got, fp32, atol=1e-3)
    assert bf16.precision == "bf16" and not np.array_equal(got, fp32)
    with pytest.raises(ParameterError, match="precision"):
        folded_forward(model, precision="fp16")
    norm = model.get_layer("cnn").layers[5]
    gamma, *rest = norm.get_weights()
    norm.set_weights([-gamma, *rest])  # a negative scale does not commute with relu: Keras's own graph is used
    assert folded_forward(model) is None
    assert folded_forward(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])) is None
