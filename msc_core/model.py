"""The depth-layer 3D CNN, wrapped so that it reads compact codes, and its on-disk format.

An msc model takes what the shards store, uint8 colormap indices of shape
``config.encoded_shape`` (128, 215), and answers [speech, music]
probabilities. Its first stage rebuilds the dense depth tensor exactly with
built-in Keras layers only (a frozen ``Embedding`` lookup table, ``Permute``,
``Reshape``), so a saved model loads in plain Keras with ``safe_mode=True``
and without msc installed::

    codes uint8 (B, 128, 215) -> "decode" (B, 8, 128, 215, 1) float32 -> "cnn" -> (B, 2) softmax

A model directory holds three files:

- ``model.keras``: the Keras 3 native archive of that model;
- ``feature_config.json``: :meth:`FeatureConfig.to_json` of the features it reads;
- ``model.json``: msc metadata (``model_id``, ``labels``, ``widths``, ``dense``,
  ``source``, ``msc_version``, ``feature_hash``, ``created_at``, ``extra``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from .config import CLASSES, LABELS, PAPER, FeatureConfig, msc_version, require_same_features
from .depth import COLORMAP_SIZE, depth_tables
from .errors import ModelLoadError, OutputExistsError, ParameterError
from .shards import atomic_output
from .storage import is_uri, local_dir

MODEL_FILE = "model.keras"
FEATURE_CONFIG_FILE = "feature_config.json"
METADATA_FILE = "model.json"
#: Files of the published model (PREPROCESSING.md) that :func:`import_paper_model` reads.
PAPER_FILES = ("config.json", "model.weights.h5")

PAPER_WIDTHS = (32, 64, 128)
PAPER_DENSE = (128, 64)
_CONV_DROPOUT = (0.2, 0.3, 0.4)
_DENSE_DROPOUT = 0.5
#: Arithmetic of the model's convolutions at inference (:func:`folded_forward`).
PRECISIONS = ("fp32", "bf16")


# ---------------------------------------------------------------------------------------- building
def build_cnn(config: FeatureConfig, *, widths: tuple[int, int, int] = PAPER_WIDTHS,
              dense: tuple[int, int] = PAPER_DENSE, batchnorm_momentum: float = 0.99,
              outputs: int = len(LABELS), seed: int | None = None) -> keras.Sequential:
    """The paper's 3D CNN over the dense depth tensor (about 303k parameters at paper widths).

    Three blocks ``Conv3D(3x3x3, same, relu) -> BatchNormalization``, the first
    two followed by ``MaxPooling3D(2)`` and dropout .2 / .3, then global average
    pooling, dropout .4, two ReLU dense layers each followed by dropout .5, and a
    softmax over the classes (the paper's 2; msc's own models one per content class).

    Parameters
    ----------
    config : FeatureConfig
        Gives the input shape ``config.tensor_shape`` = (layers, n_mels, frames, 1).
    widths : tuple of 3 int
        Filters of the three convolutions.
    dense : tuple of 2 int
        Units of the two hidden dense layers.
    batchnorm_momentum : float
        Momentum of the BatchNormalization moving statistics (the paper's 0.99).
        The depth tensor's activations have variances near 1e-3 while the moving
        variance starts at 1, so 0.99 needs about 1,000 steps before inference
        mode is usable; short runs on small data want e.g. 0.9.
    outputs : int
        Classes of the softmax (C).
    seed : int or None
        Seeds the kernel initializers and dropout masks (layer ``i`` gets
        ``seed + i``); ``None`` draws them at random.

    Returns
    -------
    keras.Sequential named ``"cnn"``
        float32 (B, layers, n_mels, frames, 1) -> softmax float32 (B, C).
    """
    import keras

    seeds = itertools.count(seed) if seed is not None else itertools.repeat(None)

    def conv(filters: int) -> list[keras.layers.Layer]:
        return [keras.layers.Conv3D(filters, 3, padding="same", activation="relu",
                                    kernel_initializer=keras.initializers.GlorotUniform(next(seeds))),
                keras.layers.BatchNormalization(momentum=batchnorm_momentum)]

    def dropout(rate: float) -> keras.layers.Layer:
        return keras.layers.Dropout(rate, seed=next(seeds))

    def hidden(units: int) -> list[keras.layers.Layer]:
        return [keras.layers.Dense(units, activation="relu",
                                   kernel_initializer=keras.initializers.GlorotUniform(next(seeds))),
                dropout(_DENSE_DROPOUT)]

    return keras.Sequential([
        keras.Input(config.tensor_shape),
        *conv(widths[0]), keras.layers.MaxPooling3D(2), dropout(_CONV_DROPOUT[0]),
        *conv(widths[1]), keras.layers.MaxPooling3D(2), dropout(_CONV_DROPOUT[1]),
        *conv(widths[2]), keras.layers.GlobalAveragePooling3D(), dropout(_CONV_DROPOUT[2]),
        *hidden(dense[0]),
        *hidden(dense[1]),
        keras.layers.Dense(outputs, activation="softmax",
                           kernel_initializer=keras.initializers.GlorotUniform(next(seeds))),
    ], name="cnn")


def decode_stage(config: FeatureConfig) -> keras.Sequential:
    """Built-in Keras layers that turn compact codes into the exact depth tensor.

    A frozen ``Embedding(256, layers)`` whose row ``k`` is
    ``one_hot(layer_of[k]) * intensity_of[k]`` (:func:`msc_core.depth.depth_tables`)
    looks every pixel up, then ``Permute`` and ``Reshape`` move the layer axis
    first and add the channel axis. Bit for bit equal to :func:`msc_core.depth.decode`.

    The table must stay frozen: to train, set ``trainable`` on the ``"cnn"``
    sub-model, not on the whole model (Keras would pass it down to the table).

    Returns
    -------
    keras.Sequential named ``"decode"``
        uint8 (B, n_mels, frames) -> float32 (B, layers, n_mels, frames, 1).
    """
    import keras

    layer_of, intensity_of = depth_tables(config.colormap, config.layers)
    table = np.zeros((COLORMAP_SIZE, config.layers), np.float32)
    inside = layer_of >= 0
    table[np.flatnonzero(inside), layer_of[inside]] = intensity_of[inside]
    lookup = keras.layers.Embedding(COLORMAP_SIZE, config.layers, trainable=False, name="depth_table")
    stage = keras.Sequential([
        keras.Input(config.encoded_shape, dtype="uint8", name="codes"),
        lookup,                                                     # (B, n_mels, frames, layers)
        keras.layers.Permute((3, 1, 2), name="layers_first"),       # (B, layers, n_mels, frames)
        keras.layers.Reshape(config.tensor_shape, name="add_channel"),
    ], name="decode")
    lookup.set_weights([table])
    return stage


def _codes_model(cnn: keras.Model, config: FeatureConfig) -> keras.Model:
    """``cnn`` behind :func:`decode_stage`: uint8 codes (B, n_mels, frames) -> (B, C)."""
    import keras

    codes = keras.Input(config.encoded_shape, dtype="uint8", name="codes")
    return keras.Model(codes, cnn(decode_stage(config)(codes)), name="msc")


def build_model(config: FeatureConfig, *, widths: tuple[int, int, int] = PAPER_WIDTHS,
                dense: tuple[int, int] = PAPER_DENSE, batchnorm_momentum: float = 0.99,
                outputs: int = len(LABELS), seed: int | None = None) -> keras.Model:
    """A fresh msc model: :func:`decode_stage` then :func:`build_cnn` (nested as ``"cnn"``).

    Parameters
    ----------
    config : FeatureConfig
    widths, dense, batchnorm_momentum, outputs, seed
        As in :func:`build_cnn`.

    Returns
    -------
    keras.Model
        uint8 codes (B, n_mels, frames) -> softmax float32 (B, C).
    """
    return _codes_model(build_cnn(config, widths=widths, dense=dense, batchnorm_momentum=batchnorm_momentum,
                                  outputs=outputs, seed=seed), config)


def trunk(model: keras.Model) -> keras.Model:
    """The convolutional part of an msc model: uint8 codes (B, n_mels, frames) -> float32 (B, widths[2]).

    The decode stage and the ``"cnn"`` layers up to the global average pooling,
    sharing the model's weights; its output is what the dense head reads.
    """
    import keras

    codes = keras.Input(model.input_shape[1:], dtype="uint8", name="codes")
    pooled = model.get_layer("decode")(codes)
    for layer in model.get_layer("cnn").layers:
        pooled = layer(pooled)
        if isinstance(layer, keras.layers.GlobalAveragePooling3D):
            break
    return keras.Model(codes, pooled, name="trunk")


def head(model: keras.Model) -> list[keras.layers.Layer]:
    """The ``"cnn"`` layers after the global average pooling: dropout, the two hidden dense layers, the softmax."""
    import keras

    layers = model.get_layer("cnn").layers
    pooling = next(i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.GlobalAveragePooling3D))
    return layers[pooling + 1:]


def architecture(model: keras.Model) -> list[tuple[str, dict[str, Any]]]:
    """Each layer's class and the settings that define it, without names, dtypes or initializers.

    Two models with equal architectures compute the same function given the same weights.
    """
    def defining(key: str) -> bool:
        return key not in ("name", "dtype", "trainable", "seed") and not key.endswith("_initializer")

    return [(type(layer).__name__, {k: v for k, v in layer.get_config().items() if defining(k)})
            for layer in model.layers]


_FOLDABLE = ("Conv3D", "BatchNormalization", "MaxPooling3D", "Dropout") * 2 + (
    "Conv3D", "BatchNormalization", "GlobalAveragePooling3D", "Dropout") + ("Dense", "Dropout") * 2 + ("Dense",)


def folded_forward(model: keras.Model, *, precision: str = "fp32") -> Callable | None:
    """The inference function of an msc model of :func:`build_cnn`'s layout, BatchNormalization folded away.

    Each block computes ``relu(conv(x) + b) * s + t`` (inference-mode
    BatchNormalization, ``s = gamma / sqrt(var + eps)``). Where every ``s > 0``
    this is ``relu(conv'(x) + b') + t`` with the kernel and bias scaled by
    ``s``, and the shift ``t`` commutes with the max and average pooling that
    follow, so it is added to the pooled tensor, 8 times smaller. The same
    function up to float rounding (the model card gives the measured
    difference), and about 1.4x faster on CPU, where the full-resolution
    BatchNormalization pass is a large share of the work.

    With ``precision="bf16"`` the three convolution blocks (convolution,
    bias, ReLU, pooling) run in bfloat16, which oneDNN computes with the
    CPU's bf16 instructions where it has them (AVX512_BF16, AMX); the inputs
    are one-hot and exact in bf16, the global mean and the dense head stay
    float32. It is an approximation: the model card gives what it changes.

    Parameters
    ----------
    model : keras.Model
        An msc model (:func:`build_model`, :func:`load_model_dir`).
    precision : {"fp32", "bf16", "auto"}
        Arithmetic of the convolution blocks (:func:`resolve_precision`).

    Returns
    -------
    callable or None
        uint8 codes tensor (B, n_mels, frames) -> float32 (B, C), for
        ``tf.function``; None where the model has another layout or a
        BatchNormalization scale that is not positive (use the Keras model).
    """
    import tensorflow as tf

    dtype = tf.bfloat16 if resolve_precision(precision) == "bf16" else tf.float32  # of the convolution blocks
    try:
        layers = model.get_layer("cnn").layers
        table = model.get_layer("decode").get_layer("depth_table").get_weights()[0]
    except (ValueError, AttributeError, IndexError):
        return None
    if tuple(type(layer).__name__ for layer in layers) != _FOLDABLE:
        return None
    convs, norms, denses = layers[0:9:4], layers[1:10:4], layers[12::2]
    pools = [layers[2], layers[6]]
    if (any(layer.get_config()["activation"] != "relu" or layer.padding != "same" or tuple(layer.strides) != (1,) * 3
            or tuple(layer.dilation_rate) != (1,) * 3 or not layer.use_bias for layer in convs)
            or any(tuple(pool.pool_size) != (2,) * 3 or tuple(pool.strides) != (2,) * 3 or pool.padding != "valid"
                   for pool in pools)
            or [layer.get_config()["activation"] for layer in denses] != ["relu", "relu", "softmax"]
            or any(norm.axis not in (-1, 4, [-1], [4]) or not (norm.center and norm.scale) for norm in norms)):
        return None
    scales, shifts = [], []
    for norm in norms:
        gamma, beta, mean, variance = (np.asarray(weight, np.float64) for weight in norm.get_weights())
        scale = gamma / np.sqrt(variance + norm.epsilon)
        if not (scale > 0).all():
            return None
        scales.append(scale)
        shifts.append(tf.constant(beta - mean * scale, tf.float32))
    kernels = [tf.cast(conv.get_weights()[0] * scale, dtype) for conv, scale in zip(convs, scales)]
    biases = [tf.cast(conv.get_weights()[1] * scale, dtype) for conv, scale in zip(convs, scales)]
    dense = [[tf.constant(weight, tf.float32) for weight in layer.get_weights()] for layer in denses]
    table = tf.constant(table, tf.float32)
    pool = [1, 2, 2, 2, 1]

    def block(x, i):
        return tf.nn.relu(tf.nn.bias_add(tf.nn.conv3d(x, kernels[i], [1] * 5, "SAME"), biases[i]))

    def forward(codes):
        x = tf.gather(table, tf.cast(codes, tf.int32))                       # (B, n_mels, frames, layers)
        x = tf.cast(tf.expand_dims(tf.transpose(x, (0, 3, 1, 2)), -1), dtype)  # (B, layers, n_mels, frames, 1)
        for i in range(2):
            x = tf.nn.max_pool3d(block(x, i), pool, pool, "VALID") + tf.cast(shifts[i], dtype)
        x = tf.reduce_mean(tf.cast(block(x, 2), tf.float32), axis=(1, 2, 3)) + shifts[2]
        x = tf.nn.relu(x @ dense[0][0] + dense[0][1])
        x = tf.nn.relu(x @ dense[1][0] + dense[1][1])
        return tf.nn.softmax(x @ dense[2][0] + dense[2][1])

    return forward


# ---------------------------------------------------------------------------------------- using
@dataclass(frozen=True, eq=False)
class MscModel:
    """A loaded msc model with its feature config and metadata.

    Attributes
    ----------
    keras_model : keras.Model
        uint8 codes (B, n_mels, frames) -> float32 (B, C), one column per class of :attr:`labels`.
    config : FeatureConfig
        Features the model reads; compare with :func:`require_same_features`.
    metadata : Mapping
        The contents of ``model.json``.
    precision : {"fp32", "bf16"}
        Arithmetic of the convolutions at inference (:func:`folded_forward`; a model
        that cannot be folded runs Keras's float32 graph whatever this says).
    """

    keras_model: keras.Model
    config: FeatureConfig
    metadata: Mapping[str, Any]
    precision: Literal["fp32", "bf16"] = "fp32"

    @property
    def model_id(self) -> str:
        """Stable identity: the source plus a short hash of the weights."""
        return self.metadata["model_id"]

    @property
    def labels(self) -> tuple[str, ...]:
        """The classes of the outputs, in order (a subset of :data:`msc_core.config.CLASSES`)."""
        return tuple(self.metadata["labels"])

    @functools.cached_property
    def _forward(self):
        """Inference graph traced once for any batch size: :func:`folded_forward` where it applies, else Keras's."""
        import tensorflow as tf

        spec = tf.TensorSpec((None, *self.config.encoded_shape), tf.uint8)
        forward = (folded_forward(self.keras_model, precision=self.precision)
                   or (lambda codes: self.keras_model(codes, training=False)))
        return tf.function(forward, input_signature=[spec])

    def predict_codes(self, codes: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
        """Class probabilities (columns in :attr:`labels` order) of a batch of compact windows.

        Parameters
        ----------
        codes : np.ndarray, uint8, shape (B, n_mels, frames)
            Colormap indices from :func:`msc_core.depth.featurize`.
        batch_size : int
            Windows per forward pass; bounds memory (at paper widths the first
            convolution alone makes 28 MB of activations per window).

        Returns
        -------
        np.ndarray, float32, shape (B, C)
        """
        codes = np.asarray(codes)
        if codes.ndim != 3 or codes.shape[1:] != self.config.encoded_shape or codes.dtype != np.uint8:
            raise ValueError(f"expected uint8 codes of shape (B, {', '.join(map(str, self.config.encoded_shape))}), "
                             f"got {codes.dtype} {codes.shape}")
        chunks = [self._forward(codes[start:start + batch_size]).numpy()
                  for start in range(0, len(codes), batch_size)]
        probs = np.concatenate(chunks) if chunks else np.zeros((0, len(self.labels)), np.float32)
        return probs if self.temperature == 1.0 else apply_temperature(probs, self.temperature)

    @property
    def temperature(self) -> float:
        """The calibration temperature applied to every output (1.0: uncalibrated); see :func:`set_temperature`."""
        return float((self.metadata.get("calibration") or {}).get("temperature", 1.0))

    def uncalibrated(self) -> "MscModel":
        """The same model without its calibration temperature."""
        return dataclasses.replace(self, metadata={**self.metadata, "calibration": None})

    def with_precision(self, precision: Literal["auto", "fp32", "bf16"]) -> "MscModel":
        """The same model computing at ``precision`` (:func:`resolve_precision`)."""
        return dataclasses.replace(self, precision=resolve_precision(precision))


def cpu_has_bf16() -> bool:
    """Whether this machine's CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16; Linux's /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> Literal["fp32", "bf16"]:
    """``"auto"``: ``"bf16"`` where :func:`cpu_has_bf16`, else ``"fp32"``; the others as they are.

    Raises
    ------
    ParameterError
        Not one of ``auto``, :data:`PRECISIONS`.
    """
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision not in PRECISIONS:
        raise ParameterError(f"precision must be auto, {' or '.join(PRECISIONS)}, not {precision!r}")
    return precision


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities softmax(log(probs) / T) along the last axis: float32 (..., C).

    T > 1 softens, T < 1 sharpens; the most probable class never changes.
    """
    logits = np.log(np.maximum(np.asarray(probs, np.float64), 1e-30)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=-1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------- storing
def _weights_digest(model: keras.Model) -> str:
    """sha256 (hex) over the shapes and bytes of every weight, in model order."""
    import keras

    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _labels_problem(labels: Any) -> str | None:
    """Why ``labels`` cannot be a model's classes (two or more of CLASSES, in CLASSES order), or None."""
    if not isinstance(labels, (list, tuple)) or len(labels) < 2 or not all(label in CLASSES for label in labels) \
            or list(labels) != sorted(set(labels), key=CLASSES.index):
        return f"labels must be two or more of {list(CLASSES)}, in that order; got {labels!r}"
    return None


def _signature_problem(model: keras.Model, config: FeatureConfig, labels: Sequence[str]) -> str | None:
    """Why ``model`` does not map uint8 codes ``config.encoded_shape`` to (None, len(labels)), or None."""
    expected_input = (None, *config.encoded_shape)
    dtypes = [tensor.dtype for tensor in model.inputs]
    if model.input_shape != expected_input or dtypes != ["uint8"]:
        return f"input is {model.input_shape} of {dtypes}, expected one uint8 {expected_input} compact codes"
    if model.output_shape != (None, len(labels)):
        return f"output shape is {model.output_shape}, expected (None, {len(labels)}) for {list(labels)}"
    return None


def save_model_dir(model: keras.Model, config: FeatureConfig, out_dir: str | os.PathLike, *,
                   source: Literal["trained", "paper-import"], labels: Sequence[str] = LABELS,
                   extra: Mapping[str, Any] | None = None) -> MscModel:
    """Write an msc model directory atomically (built beside ``out_dir``, then renamed).

    Parameters
    ----------
    model : keras.Model
        From :func:`build_model` (uint8 codes in, (B, C) out, nested ``"cnn"``).
    config : FeatureConfig
        Features the model reads.
    out_dir : str or PathLike
        Local directory to create; must not exist yet.
    source : {"trained", "paper-import"}
        Where the weights come from; also names the model id.
    labels : sequence of str
        The C classes of the outputs, in order: two or more of :data:`msc_core.config.CLASSES`, in that order.
    extra : Mapping or None
        JSON-serializable facts to keep under ``"extra"`` in ``model.json``
        (training data, epochs, metrics...).

    Returns
    -------
    MscModel
        The saved model with its metadata.

    Raises
    ------
    OutputExistsError
        ``out_dir`` already exists.
    ValueError
        ``labels`` are not valid classes, or ``model`` does not map uint8 codes
        ``config.encoded_shape`` to (B, len(labels)).
    """
    import keras

    out_dir = Path(out_dir)
    problem = _labels_problem(labels) or _signature_problem(model, config, labels)
    if problem:
        raise ValueError(f"cannot save this model: {problem}")
    if out_dir.exists():
        raise OutputExistsError(f"{out_dir} already exists; choose a new model directory")
    cnn = model.get_layer("cnn")
    metadata = {
        "model_id": f"{source}-{_weights_digest(model)[:12]}",
        "labels": list(labels),
        "widths": [layer.filters for layer in cnn.layers if isinstance(layer, keras.layers.Conv3D)],
        "dense": [layer.units for layer in cnn.layers if isinstance(layer, keras.layers.Dense)][:-1],
        "source": source,
        "msc_version": msc_version(),
        "feature_hash": config.hash,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "extra": dict(extra or {}),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save(staging / MODEL_FILE)
        (staging / FEATURE_CONFIG_FILE).write_text(config.to_json())
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=1))
        staging.chmod(0o755)  # mkdtemp makes it private
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return MscModel(model, config, metadata)


def set_temperature(path: str | os.PathLike, *, temperature: float, fitted_on: Mapping[str, Any]) -> None:
    """Record a calibration temperature in an msc model directory's ``model.json`` (atomically).

    Parameters
    ----------
    path : str or PathLike
        The model directory.
    temperature : float
        From :func:`msc_core.evaluation.fit_temperature`; 1.0 removes calibration.
    fitted_on : Mapping
        JSON-ready facts on the held-out data it was fitted on (shards, split, windows...).

    Raises
    ------
    ParameterError
        A temperature that is not a finite number above 0.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ParameterError(f"a temperature must be a finite number above 0, not {temperature}")
    metadata_path = Path(path) / METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    metadata["calibration"] = {"temperature": float(temperature), "fitted_on": dict(fitted_on)}
    with atomic_output(str(metadata_path.resolve())) as sink:
        sink.write(json.dumps(metadata, indent=1).encode())


MAX_WEIGHT_BYTES = 2 ** 30
"""Most bytes of weights (float32) a model archive may declare; larger ones are refused before Keras builds them."""

_SIZE_KEYS = ("units", "filters", "input_dim", "output_dim")


def _finite_positive(value: Any) -> bool:
    """Whether ``value`` is a number (not a bool), finite and > 0."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _metadata_problem(metadata: Mapping[str, Any]) -> str | None:
    """What is wrong with ``model.json``'s values (types, sizes, the calibration temperature), or None."""
    calibration = metadata.get("calibration")
    if calibration is not None:
        if not isinstance(calibration, dict) or not _finite_positive(calibration.get("temperature")):
            return (f"calibration.temperature must be a finite number > 0, not "
                    f"{calibration.get('temperature') if isinstance(calibration, dict) else calibration!r}")
    for key in ("widths", "dense"):
        value = metadata.get(key)
        if value is not None and (not isinstance(value, list) or not all(
                isinstance(size, int) and not isinstance(size, bool) and 0 < size <= 2 ** 16 for size in value)):
            return f"{key} must be a list of whole numbers in 1..65536, not {value!r}"
    return None


def _declared_weight_bytes(archive: Path) -> int:
    """Bytes of float32 weights the layers of a ``.keras`` archive's ``config.json`` would allocate (estimated).

    Read from the archive's configuration alone, before Keras builds
    anything: Dense, convolution, Embedding and normalization layers are
    sized from their settings and ``build_config`` input shapes; a layer whose
    input size is not declared counts as taking one input channel.

    Raises
    ------
    ModelLoadError
        Not a zip archive with a readable ``config.json``.
    """
    try:
        with zipfile.ZipFile(archive) as members:
            if sum(info.file_size for info in members.infolist()) > 2 * MAX_WEIGHT_BYTES:
                return sum(info.file_size for info in members.infolist())
            config = json.loads(members.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
        raise ModelLoadError(f"{archive}: cannot be loaded safely: not a readable Keras archive ({error})") \
            from error
    total = 0
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        settings = node.get("config")
        if "class_name" not in node or not isinstance(settings, dict):
            continue
        sizes = [settings.get(key) for key in _SIZE_KEYS if isinstance(settings.get(key), int)]
        kernel = settings.get("kernel_size") or [1]
        kernel = [kernel] if isinstance(kernel, int) else kernel
        shape = ((node.get("build_config") or {}).get("input_shape") or [None])
        channels = shape[-1] if shape and isinstance(shape[-1], int) else 1
        if sizes and all(isinstance(k, int) for k in kernel):
            total += math.prod(kernel) * math.prod(sizes) * (channels if "input_dim" not in settings else 1) * 4
        elif "BatchNormalization" in str(node.get("class_name")):
            total += 4 * channels * 4
    return total


def _on_local_copy(function: Callable[..., Any], uri: str | os.PathLike, **options: Any) -> Any:
    """``function(local, **options)`` on a temporary local copy of the model directory at ``uri``.

    A :class:`ModelLoadError` names ``uri``, not the copy.
    """
    with local_dir(uri) as fetched:
        try:
            return function(fetched, **options)
        except ModelLoadError as error:
            raise ModelLoadError(str(error).replace(fetched, os.fspath(uri))) from None


def check_model_dir(path: str | os.PathLike, *,
                    expected_config: FeatureConfig | None = None) -> tuple[dict[str, Any], FeatureConfig]:
    """Check an msc model directory from its files alone, without loading Keras or TensorFlow.

    Everything :func:`load_model_dir` checks before it builds the model: the
    three files, ``model.json``'s values, the feature hash, the features
    against ``expected_config`` and the size of the weights the archive declares.
    A job's driver calls this to refuse a bad model before any work starts,
    and leaves loading to its workers.

    Parameters
    ----------
    path : str or PathLike
        The model directory: a local path, or a URI (``s3://...``) read through a temporary copy.
    expected_config : FeatureConfig or None
        Features the caller will feed; must have the model's feature hash.

    Returns
    -------
    metadata : dict
        The contents of ``model.json``.
    config : FeatureConfig
        The features the model reads.

    Raises
    ------
    ModelLoadError, FeatureConfigMismatchError
        As :func:`load_model_dir`, for every reason but the archive Keras refuses.
    """
    if is_uri(os.fspath(path)):
        return _on_local_copy(check_model_dir, path, expected_config=expected_config)
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: no such model directory")
    missing = [name for name in (MODEL_FILE, FEATURE_CONFIG_FILE, METADATA_FILE) if not (path / name).is_file()]
    if missing:
        raise ModelLoadError(f"{path}: not an msc model directory, missing {', '.join(missing)}")
    try:
        metadata = json.loads((path / METADATA_FILE).read_text())
        config = FeatureConfig.from_json((path / FEATURE_CONFIG_FILE).read_text())
    except (ValueError, TypeError) as error:
        raise ModelLoadError(f"{path}: unreadable {METADATA_FILE} or {FEATURE_CONFIG_FILE}: {error}") from error
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{path}: {METADATA_FILE} is not a JSON object")
    if metadata.get("feature_hash") != config.hash:
        raise ModelLoadError(f"{path}: {METADATA_FILE} names feature hash {metadata.get('feature_hash')}, "
                             f"but {FEATURE_CONFIG_FILE} has {config.hash}")
    if not isinstance(metadata.get("model_id"), str) or not metadata["model_id"]:
        raise ModelLoadError(f"{path}: {METADATA_FILE} must hold a model_id (text)")
    problem = _labels_problem(metadata.get("labels")) or _metadata_problem(metadata)
    if problem:
        raise ModelLoadError(f"{path}: {METADATA_FILE}: {problem}")
    if expected_config is not None:
        require_same_features(expected_config, config, what=f"features offered vs model {path}")
    declared = _declared_weight_bytes(path / MODEL_FILE)
    if declared > MAX_WEIGHT_BYTES:
        raise ModelLoadError(f"{path / MODEL_FILE}: declares about {declared / 2 ** 30:.1f} GiB of weights, over the "
                             f"{MAX_WEIGHT_BYTES / 2 ** 30:g} GiB msc loads; refused before loading")
    return metadata, config


def load_model_dir(path: str | os.PathLike, *, expected_config: FeatureConfig | None = None) -> MscModel:
    """Load and check an msc model directory written by :func:`save_model_dir`.

    Parameters
    ----------
    path : str or PathLike
        The model directory: a local path, or a URI (``s3://...``) fetched to a temporary copy.
    expected_config : FeatureConfig or None
        Features the caller will feed; must have the model's feature hash.

    Returns
    -------
    MscModel

    Raises
    ------
    ModelLoadError
        Missing or unreadable files, a hash in ``model.json`` that does not
        match ``feature_config.json``, a model Keras refuses in safe mode (for
        example one with a ``Lambda`` layer), wrong input/output shapes, values
        of ``model.json`` of the wrong type or size (a calibration temperature
        that is not finite and > 0), or an archive declaring more than
        :data:`MAX_WEIGHT_BYTES` of weights (refused before anything is built).
    FeatureConfigMismatchError
        ``expected_config`` differs from the model's features.
    """
    import keras

    if is_uri(os.fspath(path)):
        return _on_local_copy(load_model_dir, path, expected_config=expected_config)
    metadata, config = check_model_dir(path, expected_config=expected_config)
    path = Path(path)
    try:
        model = keras.models.load_model(path / MODEL_FILE, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises many types for bad archives; all mean "cannot load"
        raise ModelLoadError(f"{path / MODEL_FILE}: cannot be loaded safely: {type(error).__name__}: {error}") \
            from error
    problem = _signature_problem(model, config, metadata["labels"])
    if problem:
        raise ModelLoadError(f"{path / MODEL_FILE}: {problem}")
    return MscModel(model, config, metadata)


def import_paper_model(paper_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                       config: FeatureConfig = PAPER) -> MscModel:
    """Turn the published model (``config.json`` + ``model.weights.h5``) into an msc model directory.

    The published Sequential is loaded in Keras safe mode (its two files zipped
    into a temporary ``.keras`` archive), checked to have exactly the
    :func:`build_cnn` architecture, and its weights are copied into one behind
    :func:`decode_stage`, so that it reads compact codes.

    Parameters
    ----------
    paper_dir : str or PathLike
        Directory holding the published files (PREPROCESSING.md).
    out_dir : str or PathLike
        msc model directory to create (see :func:`save_model_dir`).
    config : FeatureConfig
        Features the published model was trained on: the paper's.

    Returns
    -------
    MscModel
        With ``source`` "paper-import".

    Raises
    ------
    ModelLoadError
        Files missing or unloadable, or an architecture other than the paper's.
    """
    import keras

    paper_dir = Path(paper_dir)
    missing = [name for name in PAPER_FILES if not (paper_dir / name).is_file()]
    if missing:
        raise ModelLoadError(f"{paper_dir}: not a published Keras model, missing {', '.join(missing)}")
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "paper.keras"
        with zipfile.ZipFile(archive, "w") as bundle:
            for name in PAPER_FILES:
                bundle.write(paper_dir / name, name)
        try:
            published = keras.models.load_model(archive, safe_mode=True, compile=False)
        except Exception as error:  # see load_model_dir
            raise ModelLoadError(f"{paper_dir}: cannot be loaded safely: {type(error).__name__}: {error}") from error
    cnn = build_cnn(config)
    if architecture(published) != architecture(cnn):
        raise ModelLoadError(f"{paper_dir}: architecture differs from the paper's 3D CNN "
                             f"({len(published.layers)} layers, {published.count_params()} parameters)")
    cnn.set_weights(published.get_weights())
    return save_model_dir(_codes_model(cnn, config), config, out_dir, source="paper-import",
                          extra={"imported_from": str(paper_dir.resolve())})
