"""TensorFlow/Keras models: an MLP, a 2-D CNN, a (bi)LSTM, a CNN-LSTM and a VGG16 transfer model.

Importing this module imports TensorFlow, so only the registry imports it, and only when a Keras model is
created (TensorFlow imported before aiortc kills the process; ``import ser_core`` must stay free of it). It
imports openSMILE first where it is installed: after TensorFlow, openSMILE's native library aborts the process
on its first extraction ("malloc(): invalid size").

All models share one training recipe (:meth:`_KerasModel.fit`): standardisation statistics learned from the
training data, a stratified validation split taken from it (``val_fraction``) for early stopping with the best
weights restored and for ReduceLROnPlateau, Adam, balanced class weights and/or a focal loss, optional random
oversampling, and a ``progress(epoch, logs)`` callback. Subclasses only say how to turn the stacked features
into network input (:meth:`_prepare`) and which network to build (:meth:`_build`).
"""
from __future__ import annotations

import json
import logging
import os
import warnings
import weakref
from pathlib import Path

import importlib.util

import numpy as np

if importlib.util.find_spec("opensmile") is not None:
    import opensmile  # noqa: F401  (before TensorFlow, see above)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402  (after the log-level variable on purpose)
import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from ..errors import ModelError  # noqa: E402
from .base import SERModel, balanced_class_weights, random_oversample, usable_cores  # noqa: E402

log = logging.getLogger(__name__)
KERAS_FILE = "model.keras"
STATE_FILE = "keras_state.json"


def _limit_threads():
    """Use at most the machine's cores (``SER_TF_THREADS`` overrides); only possible before TF starts."""
    n = int(os.environ.get("SER_TF_THREADS", usable_cores()))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, n)))
    except RuntimeError:  # the runtime was already initialised by someone else: keep its settings
        pass


_limit_threads()


# -- pieces shared by the networks ----------------------------------------------------------------------------
def focal_loss(gamma: float = 2.0):
    """Categorical focal loss ``-sum_c y_c (1 - p_c)^gamma log p_c`` (Lin et al. 2017) on one-hot targets."""

    def loss(y_true, y_pred):
        p = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        return -ops.sum(y_true * ops.power(1.0 - p, gamma) * ops.log(p), axis=-1)

    return loss


@keras.saving.register_keras_serializable(package="ser_core")
class CarryMask(layers.Layer):
    """Zero and mask the steps of a downsampled sequence ``h (n, T', c)`` whose source frames in ``x (n, T, d)``
    were all zero padding (``T' = T // pool``), so that a following LSTM skips them."""

    def __init__(self, pool: int, **kwargs):
        super().__init__(**kwargs)
        self.pool = int(pool)
        self.supports_masking = True

    def _mask(self, x, h):
        valid = ops.any(ops.not_equal(x, 0.0), axis=-1)  # (n, T)
        steps = h.shape[1]
        valid = ops.reshape(valid[:, : steps * self.pool], (-1, steps, self.pool))
        return ops.any(valid, axis=-1)  # (n, T')

    def call(self, inputs):
        x, h = inputs
        return h * ops.expand_dims(ops.cast(self._mask(x, h), h.dtype), -1)

    def compute_mask(self, inputs, mask=None):
        return self._mask(*inputs)

    def compute_output_shape(self, input_shapes):
        return input_shapes[1]

    def get_config(self):
        return {**super().get_config(), "pool": self.pool}


class _Batches(keras.utils.PyDataset):
    """Shuffled training batches ``(x, one_hot, sample_weight)`` with an optional augmentation ``fn(x, rng)``."""

    def __init__(self, X, Y, W, batch_size, augment=None, seed=0):
        super().__init__()
        self.X, self.Y, self.W, self.batch_size, self.augment = X, Y, W, batch_size, augment
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(X))

    def __len__(self):
        return int(np.ceil(len(self.X) / self.batch_size))

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        x = self.X[idx]
        if self.augment is not None:
            x = self.augment(x.copy(), self.rng)
        return x, self.Y[idx], self.W[idx]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.X))


def _stratified_split(y_idx: np.ndarray, fraction: float, seed: int):
    """Indices (train, val); val empty when ``fraction`` is 0 or a class has fewer than 2 clips."""
    from sklearn.model_selection import train_test_split

    n = len(y_idx)
    n_classes = len(np.unique(y_idx))
    if fraction <= 0 or np.bincount(y_idx).min(initial=n) < 2 or round(n * fraction) < n_classes:
        return np.arange(n), np.arange(0)
    return train_test_split(np.arange(n), test_size=fraction, stratify=y_idx, random_state=seed)


# -- the shared training recipe -------------------------------------------------------------------------------
class _KerasModel(SERModel):
    framework = "tensorflow"
    input_ndim = 2  # ndim of the stacked features X, checked in fit and predict
    input_desc = "(n, d) utterance features"

    def _store(self, params: dict):
        for k, v in params.items():
            if k not in ("self", "__class__"):
                setattr(self, k, tuple(v) if isinstance(v, list) else v)

    # hooks -------------------------------------------------------------------------------------------------
    def _learn_stats(self, X: np.ndarray) -> dict:
        """Standardisation statistics from training features (JSON-able lists)."""
        raise NotImplementedError

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        """Stacked features -> network input, using ``self.stats_``."""
        raise NotImplementedError

    def _build(self, input_shape: tuple, n_classes: int) -> keras.Model:
        raise NotImplementedError

    def _augmentation(self):
        """A function ``(x_batch, rng) -> x_batch`` applied to training batches, or None."""
        return None

    # input checks --------------------------------------------------------------------------------------------
    def _check_X(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != self.input_ndim:
            raise ModelError(f"Model '{self.name}' expects {self.input_desc} but got an array of shape "
                             f"{X.shape}; compute the features of a matching feature set.")
        if not np.isfinite(X).all():
            raise ModelError(f"Model '{self.name}' got features with NaN or infinite values; check the audio.")
        return X

    # training ------------------------------------------------------------------------------------------------
    def fit(self, X, y, progress=None):
        """Train on ``X`` (see ``input_desc``) and labels ``y`` (n,). ``progress(epoch, logs)`` is called after each
        epoch (0-based) with floats such as ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``learning_rate``.
        Sets ``classes_``, ``stats_``, ``model_``, ``history_`` and ``epochs_trained_``."""
        X = self._check_X(X)
        y = np.asarray(y).astype(str)
        if len(X) != len(y):
            raise ModelError(f"Model '{self.name}' got {len(X)} feature rows but {len(y)} labels.")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ModelError(f"Model '{self.name}' needs at least two emotions in the training data.")
        if self.class_weight not in ("balanced", None) or self.focal_gamma < 0 or not 0 <= self.val_fraction < 1:
            raise ModelError(f"Model '{self.name}': class_weight must be 'balanced' or None, focal_gamma >= 0 and "
                             f"0 <= val_fraction < 1 (got {self.class_weight!r}, {self.focal_gamma}, "
                             f"{self.val_fraction}).")
        keras.utils.set_random_seed(self.seed)
        y_idx = np.searchsorted(self.classes_, y)
        k = len(self.classes_)

        tr, va = _stratified_split(y_idx, self.val_fraction, self.seed)
        self.stats_ = self._learn_stats(X[tr])
        Xn = self._prepare(X)
        X_tr, y_tr = Xn[tr], y_idx[tr]
        if self.oversample:
            X_tr, y_tr = random_oversample(X_tr, y_tr, seed=self.seed)
        cw = balanced_class_weights(y_tr, k) if self.class_weight == "balanced" else np.ones(k)
        eye = np.eye(k, dtype=np.float32)

        self.model_, fit_model, X_tr, X_va = self._networks(X_tr, Xn[va], k)
        fit_model.compile(optimizer=keras.optimizers.Adam(self.lr),
                          loss=focal_loss(self.focal_gamma) if self.focal_gamma > 0 else "categorical_crossentropy",
                          metrics=["accuracy"])
        monitor = "val_loss" if len(va) else "loss"
        callbacks = [keras.callbacks.EarlyStopping(monitor=monitor, patience=self.patience, restore_best_weights=True),
                     keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5,
                                                       patience=max(1, self.patience // 2), min_lr=1e-5)]
        if progress is not None:
            callbacks.append(keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: progress(epoch, {k_: float(v) for k_, v in (logs or {}).items()})))
        batches = _Batches(X_tr, eye[y_tr], cw[y_tr].astype(np.float32), self.batch_size, self._augmentation(),
                           self.seed)
        val = (X_va, eye[y_idx[va]]) if len(va) else None
        hist = fit_model.fit(batches, validation_data=val, epochs=self.epochs, callbacks=callbacks, verbose=0)
        self.history_ = {k_: [float(v) for v in vals] for k_, vals in hist.history.items()}
        self.epochs_trained_ = len(hist.epoch)
        return self

    def _networks(self, X_tr, X_va, n_classes):
        """(full model, model to train, its train input, its val input); VGG16 overrides to train on cached
        activations of its frozen blocks."""
        model = self._build(X_tr.shape[1:], n_classes)
        return model, model, X_tr, X_va

    def predict_proba(self, X) -> np.ndarray:
        """``(n, len(classes_))`` class probabilities."""
        self._check_fitted()
        Xn = self._prepare(self._check_X(X))
        proba = _predict(self.model_, Xn).astype(np.float64)
        return proba / proba.sum(axis=1, keepdims=True)

    # persistence ---------------------------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {}

    def _save_state(self, directory: Path):
        self.model_.save(directory / KERAS_FILE)
        state = {"stats": self.stats_, "history": getattr(self, "history_", {}),
                 "epochs_trained": getattr(self, "epochs_trained_", None), **self._extra_state()}
        (directory / STATE_FILE).write_text(json.dumps(state))

    def _load_state(self, directory: Path):
        try:
            self.model_ = keras.models.load_model(directory / KERAS_FILE, compile=False)
            state = json.loads((directory / STATE_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"Could not load the Keras model in '{directory}': {exc}.") from exc
        self.stats_ = state["stats"]
        self.history_ = state.get("history", {})
        self.epochs_trained_ = state.get("epochs_trained")
        for k, v in state.items():
            if k.endswith("_"):
                setattr(self, k, v)


_PREDICT_FNS: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()


def _predict(model: keras.Model, X: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Inference through one compiled graph per model, traced once for any batch size (``model.predict`` has
    ~50 ms of overhead per call, and eager recurrent layers step through time op by op: 400 ms for one clip)."""
    if not len(X):
        return np.zeros((0, *model.output_shape[1:]), np.float32)
    fns = _PREDICT_FNS.setdefault(model, {})  # one graph per clip shape (sequence models accept any length)
    fn = fns.get(X.shape[1:])
    if fn is None:
        spec = tf.TensorSpec((None, *X.shape[1:]), tf.float32)
        fn = fns[X.shape[1:]] = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return np.concatenate([fn(tf.constant(X[i:i + batch_size], tf.float32)).numpy()
                           for i in range(0, len(X), batch_size)])


def _per_column_stats(X2d: np.ndarray) -> dict:
    """Mean and std of each column of ``X2d`` (rows, d) as lists; std floored to avoid division by 0."""
    return {"mean": X2d.mean(axis=0).tolist(), "std": np.maximum(X2d.std(axis=0), 1e-6).tolist()}


# Batch-norm momentum 0.9 (Keras: 0.99): a few hundred training steps on ~700 clips are enough for the moving
# statistics to settle.


def _dense(units, l2, name=None):
    return layers.Dense(units, kernel_regularizer=keras.regularizers.l2(l2) if l2 else None, name=name)


# -- utterance features -----------------------------------------------------------------------------------------
class KerasMLP(_KerasModel):
    """Dense layers (batch-norm, ReLU, dropout) on standardised utterance features ``(n, d)``."""

    name = "mlp_tf"

    def __init__(self, feature_set="rich", hidden=(256, 128), dropout=0.4, batchnorm=True, l2=1e-4,
                 epochs=200, batch_size=32, lr=1e-3, patience=20, val_fraction=0.15, class_weight="balanced",
                 focal_gamma=0.0, oversample=False, seed=0):
        self._store(locals())

    def _learn_stats(self, X):
        return _per_column_stats(X)

    def _prepare(self, X):
        return ((X - np.asarray(self.stats_["mean"])) / np.asarray(self.stats_["std"])).astype(np.float32)

    def _build(self, input_shape, n_classes):
        x = inp = keras.Input(input_shape)
        for units in self.hidden:
            x = _dense(units, self.l2)(x)
            if self.batchnorm:
                x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.Activation("relu")(x)
            x = layers.Dropout(self.dropout)(x)
        return keras.Model(inp, layers.Dense(n_classes, activation="softmax")(x), name="mlp")


# -- log-mel images ---------------------------------------------------------------------------------------------
class KerasCNN(_KerasModel):
    """2-D CNN from scratch on log-mel images ``(n, n_mels, frames)`` standardised per mel band.

    ``input_pool`` averages the input first (default 2x2: 64x224 -> 32x112). Conv blocks (3x3 conv with L2, batch-norm, ReLU, 2x2 max-pool) then global average+max pooling, dropout and
    softmax. ``spec_augment`` masks random frequency bands and time spans of training batches (SpecAugment).
    """

    name = "cnn"
    input_ndim = 3
    input_desc = "(n, n_mels, frames) log-mel images"

    def __init__(self, feature_set="logmel_image", filters=(16, 32, 64, 64), input_pool=(2, 2), dropout=0.3,
                 l2=1e-4, spec_augment=True, freq_mask=8, time_mask=20, epochs=40, batch_size=32, lr=2e-3, patience=8,
                 val_fraction=0.15, class_weight="balanced", focal_gamma=0.0, oversample=False, seed=0):
        self._store(locals())

    def _learn_stats(self, X):
        return _per_column_stats(X.transpose(0, 2, 1).reshape(-1, X.shape[1]))  # per mel band

    def _prepare(self, X):
        mean = np.asarray(self.stats_["mean"])[:, None]
        std = np.asarray(self.stats_["std"])[:, None]
        return ((X - mean) / std).astype(np.float32)[..., None]  # (n, n_mels, frames, 1)

    def _augmentation(self):
        return self._spec_augment if self.spec_augment else None

    def _spec_augment(self, x, rng):
        n, n_mels, frames, _ = x.shape
        for i in range(n):  # one frequency band and one time span per image, set to the (standardised) mean 0
            f = rng.integers(0, min(self.freq_mask, n_mels - 1) + 1)
            f0 = rng.integers(0, n_mels - f + 1)
            t = rng.integers(0, min(self.time_mask, frames - 1) + 1)
            t0 = rng.integers(0, frames - t + 1)
            x[i, f0:f0 + f] = 0.0
            x[i, :, t0:t0 + t] = 0.0
        return x

    def _build(self, input_shape, n_classes):
        x = inp = keras.Input(input_shape)
        if tuple(self.input_pool) != (1, 1):  # average neighbouring mels/frames: 4x less compute on a CPU
            x = layers.AveragePooling2D(tuple(self.input_pool))(x)
        reg = keras.regularizers.l2(self.l2) if self.l2 else None
        for f in self.filters:
            x = layers.Conv2D(f, 3, padding="same", use_bias=False, kernel_regularizer=reg)(x)
            x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.Activation("relu")(x)
            if min(x.shape[1], x.shape[2]) >= 2:
                x = layers.MaxPooling2D(2)(x)
        x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
        x = layers.Dropout(self.dropout)(x)
        return keras.Model(inp, layers.Dense(n_classes, activation="softmax")(x), name="cnn")


# -- frame sequences ----------------------------------------------------------------------------------------------
class _SequenceModel(_KerasModel):
    """Frame sequences ``(n, frames, d)``; all-zero frames are padding: excluded from the statistics, kept at 0
    after standardisation and masked in the recurrent layer."""

    input_ndim = 3
    input_desc = "(n, frames, d) frame sequences"

    def _learn_stats(self, X):
        frames = X.reshape(-1, X.shape[-1])
        real = frames[np.any(frames != 0, axis=1)]
        return _per_column_stats(real if len(real) else frames)

    def _prepare(self, X):
        X = X[:, :: self.frame_stride]
        real = np.any(X != 0, axis=-1, keepdims=True)
        Z = (X - np.asarray(self.stats_["mean"])) / np.asarray(self.stats_["std"])
        return np.where(real, Z, 0.0).astype(np.float32)


class KerasLSTM(_SequenceModel):
    """(Bidirectional) LSTM over masked frame sequences ``(n, frames, d)``, then dense + softmax.
    ``frame_stride`` keeps every k-th frame (a recurrent net over hundreds of steps is slow on a CPU)."""

    name = "lstm"

    def __init__(self, feature_set="mfcc_seq", units=64, bidirectional=True, dense=64, dropout=0.3,
                 frame_stride=2, epochs=60, batch_size=32, lr=2e-3, patience=10, val_fraction=0.15,
                 class_weight="balanced", focal_gamma=0.0, oversample=False, seed=0):
        self._store(locals())

    def _build(self, input_shape, n_classes):
        inp = keras.Input((None, input_shape[-1]))  # any number of frames
        x = layers.Masking(0.0)(inp)
        rnn = layers.LSTM(self.units)
        x = layers.Bidirectional(rnn)(x) if self.bidirectional else rnn(x)
        x = layers.Dropout(self.dropout)(x)
        x = layers.Dense(self.dense, activation="relu")(x)
        x = layers.Dropout(self.dropout)(x)
        return keras.Model(inp, layers.Dense(n_classes, activation="softmax")(x), name="lstm")


class KerasCNNLSTM(_SequenceModel):
    """1-D conv blocks (conv, batch-norm, ReLU, max-pool by ``pool``) over frames, then an LSTM over the
    downsampled steps whose source frames were not all padding, then softmax."""

    name = "cnn_lstm"

    def __init__(self, feature_set="mfcc_seq", filters=(64, 128), kernel_size=5, pool=2, units=64,
                 bidirectional=True, dropout=0.4, l2=1e-3, frame_stride=1, epochs=60, batch_size=32, lr=2e-3,
                 patience=10, val_fraction=0.15, class_weight="balanced", focal_gamma=0.0, oversample=False, seed=0):
        self._store(locals())

    def _build(self, input_shape, n_classes):
        x = inp = keras.Input(input_shape)
        reg = keras.regularizers.l2(self.l2) if self.l2 else None
        total = 1
        for f in self.filters:
            x = layers.Conv1D(f, self.kernel_size, padding="same", use_bias=False, kernel_regularizer=reg)(x)
            x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.Activation("relu")(x)
            if x.shape[1] >= 2 * self.pool:
                x = layers.MaxPooling1D(self.pool)(x)
                total *= self.pool
            x = layers.SpatialDropout1D(self.dropout / 2)(x)  # drops whole channels: conv maps are correlated
        x = CarryMask(total)([inp, x])
        rnn = layers.LSTM(self.units)
        x = layers.Bidirectional(rnn)(x) if self.bidirectional else rnn(x)
        x = layers.Dropout(self.dropout)(x)
        return keras.Model(inp, layers.Dense(n_classes, activation="softmax")(x), name="cnn_lstm")


# -- VGG16 transfer ----------------------------------------------------------------------------------------------
class KerasVGG16Transfer(_KerasModel):
    """VGG16 backbone (``include_top=False``) on log-mel images resized to ``image_size`` and tiled to 3 channels,
    then global pooling, a dense layer and softmax.

    ``weights``: ``"imagenet"`` (downloaded by Keras to ``~/.keras/models``; needs the internet once), a local
    ``.h5`` / ``.weights.h5`` / ``.keras`` file of a VGG16 without top, or ``None``. With pretrained weights only
    the last ``trainable_blocks`` of the 5 conv blocks are fine-tuned and the frozen blocks' activations are
    computed once per fit. If the ImageNet weights cannot be loaded (offline) it warns and trains the whole
    backbone from scratch; ``weights_loaded_`` records what was used (``"imagenet"``, the path, or ``"none"``).
    """

    name = "vgg16_transfer"
    input_ndim = 3
    input_desc = "(n, n_mels, frames) log-mel images"

    def __init__(self, feature_set="logmel_image", weights="imagenet", image_size=(64, 64), trainable_blocks=1,
                 dense=128, dropout=0.4, l2=1e-4, epochs=15,
                 batch_size=32, lr=3e-4, patience=5, val_fraction=0.15, class_weight="balanced", focal_gamma=0.0,
                 oversample=False, seed=0):
        self._store(locals())

    def _learn_stats(self, X):
        lo, hi = np.percentile(X, [1, 99])
        return {"lo": float(lo), "hi": float(max(hi, lo + 1e-3))}

    def _prepare(self, X):
        h, w = self.image_size
        if h < 32 or w < 32:
            raise ModelError(f"VGG16 needs an image_size of at least 32x32, got {h}x{w}.")
        img = np.clip((X - self.stats_["lo"]) / (self.stats_["hi"] - self.stats_["lo"]), 0, 1) * 255.0
        img = tf.image.resize(img[..., None], (h, w)).numpy()  # (n, h, w, 1), low mel bands at the top row
        img = np.repeat(img, 3, axis=-1)
        return keras.applications.vgg16.preprocess_input(img).astype(np.float32)  # ImageNet channel means

    def _backbone(self, input_shape) -> keras.Model:
        vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=input_shape)
        source = self.weights
        if source == "imagenet":
            try:
                path = keras.utils.get_file(
                    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
                    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                    cache_subdir="models", file_hash="6d6bbae143d832006294945121d1f1fc")
                vgg.load_weights(path)
                self.weights_loaded_ = "imagenet"
            except Exception as exc:  # offline, proxy, corrupt download: all mean "no pretrained weights"
                msg = (f"ImageNet weights could not be loaded ({str(exc).strip()[:200]}); training VGG16 from "
                       "scratch (slow on a CPU: ~35 s per epoch for 720 clips at 64x64). Put vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 in ~/.keras/models or "
                       "pass weights=/path/to/file.")
                log.warning(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
                self.weights_loaded_ = "none"
        elif source:
            if not Path(source).is_file():
                raise ModelError(f"VGG16 weights file '{source}' does not exist; pass an existing .h5/.keras file, "
                                 "'imagenet' or None.")
            try:
                vgg.load_weights(str(source))
            except Exception as exc:
                raise ModelError(f"Could not load VGG16 weights from '{source}' ({exc}); it must hold a VGG16 "
                                 "without its top layers.") from exc
            self.weights_loaded_ = str(source)
        else:
            self.weights_loaded_ = "none"
        return vgg

    def _networks(self, X_tr, X_va, n_classes):
        vgg = self._backbone(X_tr.shape[1:])
        pretrained = self.weights_loaded_ != "none"
        n_frozen = 5 - int(np.clip(self.trainable_blocks, 0, 5)) if pretrained else 0
        # VGG16 is a plain chain of layers: split it after block `n_frozen`'s pooling layer
        chain = vgg.layers[1:]
        split = 0 if n_frozen == 0 else [l.name for l in chain].index(f"block{n_frozen}_pool") + 1
        frozen, trained = chain[:split], chain[split:]
        for layer in frozen:
            layer.trainable = False
        reg = keras.regularizers.l2(self.l2) if self.l2 else None
        head = [layers.GlobalAveragePooling2D(), layers.Dropout(self.dropout),
                layers.Dense(self.dense, activation="relu", kernel_regularizer=reg), layers.Dropout(self.dropout),
                layers.Dense(n_classes, activation="softmax")]

        def chain_model(inp, seq, name):
            x = inp
            for layer in seq:
                x = layer(x)
            return keras.Model(inp, x, name=name)

        full = chain_model(keras.Input(X_tr.shape[1:]), frozen + trained + head, "vgg16_transfer")
        if not frozen:
            return full, full, X_tr, X_va
        prefix = chain_model(keras.Input(X_tr.shape[1:]), frozen, "vgg16_frozen")
        F_tr, F_va = _predict(prefix, X_tr), _predict(prefix, X_va)
        top = chain_model(keras.Input(F_tr.shape[1:]), trained + head, "vgg16_top")
        return full, top, F_tr, F_va

    def _extra_state(self):
        return {"weights_loaded_": self.weights_loaded_}


__all__ = ["KerasMLP", "KerasCNN", "KerasLSTM", "KerasCNNLSTM", "KerasVGG16Transfer", "focal_loss", "CarryMask"]
