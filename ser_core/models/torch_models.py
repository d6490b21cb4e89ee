"""PyTorch models: a fully connected net on utterance features and a self-attention encoder on frame sequences.

Both share one training loop (:func:`fit_network`): Adam, optional class weights or focal loss, optional random
oversampling, early stopping on a stratified validation split carved out of the data given to ``fit``,
ReduceLROnPlateau, and a ``progress(epoch, logs)`` callback instead of prints; two options for corpora that
differ (``fit(X, y, domains=...)``: each row's corpus): domain-adversarial training (a corpus classifier behind a
gradient-reversal layer, Ganin & Lempitsky 2015) and mixup with partners from another corpus (Zhang et al. 2018).
Standardisation statistics are learned in ``fit`` and saved with the weights (``weights.pt``; the corpus classifier
is a training aid and is not saved); ``model.json`` is written by the base class.
Training runs inside a forked, seeded RNG state, so two fits with the same seed agree exactly on CPU.
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import nn

from ..errors import ConfigError, ModelError
from .base import SERModel, balanced_class_weights, check_training_data, random_oversample, usable_cores

WEIGHTS_FILE = "weights.pt"
Progress = Callable[[int, dict], None]


def select_device(prefer: str | None = None) -> torch.device:
    """``prefer`` if given (``"cpu"``, ``"cuda:1"``), else CUDA if available, else Apple MPS, else CPU."""
    if prefer not in (None, "", "auto"):
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _set_threads():
    """Intra-op threads: the cores this process may use minus one (left to the app and feature workers), at
    most 8; ``SER_TORCH_THREADS`` overrides. On a busy 2-core machine two spinning OpenMP threads made a
    transformer step ~7x slower than one thread, so oversubscription is worse than leaving a core idle."""
    n = max(1, int(os.environ.get("SER_TORCH_THREADS") or min(usable_cores() - 1, 8)))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


# -- the shared training loop ------------------------------------------------------------------------------
def _loss(logits, target, weight, focal_gamma: float):
    """Cross-entropy, or focal loss ``-(1 - p_t)^gamma log p_t`` when ``focal_gamma > 0``; class-weighted."""
    if focal_gamma <= 0:
        return F.cross_entropy(logits, target, weight=weight)
    logpt = F.log_softmax(logits, dim=1).gather(1, target[:, None])[:, 0]
    loss = -((1 - logpt.exp()) ** focal_gamma) * logpt
    if weight is None:
        return loss.mean()
    w = weight[target]
    return (loss * w).sum() / w.sum()


def _soft_loss(logits, target, weight, focal_gamma: float):
    """:func:`_loss` for soft targets ``target`` (b, classes), rows summing to 1 (mixup): the per-class terms
    ``t_c w_c (1 - p_c)^gamma (-log p_c)`` summed and divided by the summed weights ``t_c w_c``, so that one-hot
    targets give the same value as ``_loss``; ``weight`` (classes,) or None."""
    logp = F.log_softmax(logits, dim=1)
    per = -target * logp  # (b, classes)
    if focal_gamma > 0:
        per = per * (1 - logp.exp()) ** focal_gamma
    if weight is None:
        return per.sum(1).mean()
    return (per * weight).sum() / (target * weight).sum()


# -- training on several corpora: gradient reversal and mixup -------------------------------------------------
class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by ``-scale`` (Ganin & Lempitsky 2015): what follows
    learns to predict the corpus, what comes before learns to hide it."""
    return _GradReverse.apply(x, scale)


def dann_ramp(progress: float) -> float:
    """Ganin & Lempitsky's schedule of the reversal strength, ``2 / (1 + exp(-10 p)) - 1``: 0 at the start of
    training (``p`` = 0, the fraction of the planned steps done), 0.76 at p = 0.2, ~1 at the end; the corpus
    classifier learns before its gradient is allowed to shape the representation."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


DOMAIN_HEAD_WIDTH = 64  # hidden units of the corpus classifier: a small probe, as Ganin's is beside the encoder


def _domain_head(d_in: int, n_domains: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, DOMAIN_HEAD_WIDTH), nn.ReLU(), nn.Linear(DOMAIN_HEAD_WIDTH, n_domains))


def mixup_partners(rows: np.ndarray, domains: np.ndarray | None, pool: np.ndarray, rng) -> np.ndarray:
    """For each training row index in ``rows`` (b,), a partner drawn uniformly from the row indices ``pool``
    whose domain differs (``domains`` (n,) domain indices of all rows); any row of ``pool`` when ``domains`` is
    None or a row's domain is the only one in ``pool``. Returns (b,) indices."""
    if domains is None:
        return pool[rng.integers(len(pool), size=len(rows))]
    out = np.empty(len(rows), dtype=pool.dtype)
    for d in np.unique(domains[rows]):
        mine = domains[rows] == d
        others = pool[domains[pool] != d]
        others = others if len(others) else pool
        out[mine] = others[rng.integers(len(others), size=int(mine.sum()))]
    return out


def _mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``lam * a + (1 - lam) * b`` row by row (``lam`` (b,)); for a bool mask (a sequence's valid frames) the
    union, so the mix keeps every frame either clip has."""
    if a.dtype == torch.bool:
        return a | b
    lam = lam.view(-1, *([1] * (a.dim() - 1)))
    return lam * a + (1 - lam) * b


def _validation_split(y: np.ndarray, fraction: float, seed: int):
    """Indices (train, val); stratified when every class has two clips, empty val when fraction is 0."""
    idx = np.arange(len(y))
    n_val = int(round(fraction * len(y)))
    if fraction <= 0 or n_val < 1 or len(y) - n_val < 2:
        return idx, idx[:0]
    counts = np.unique(y, return_counts=True)[1]
    stratify = y if counts.min() >= 2 and n_val >= len(counts) and len(y) - n_val >= len(counts) else None
    tr, va = train_test_split(idx, test_size=n_val, stratify=stratify, random_state=seed)
    return np.sort(tr), np.sort(va)


@torch.no_grad()
def _logits(net: nn.Module, tensors: list, batch_size: int) -> torch.Tensor:
    net.eval()
    n = len(tensors[0])
    return torch.cat([net(*(t[i:i + batch_size] for t in tensors)) for i in range(0, n, batch_size)])


def fit_network(net: nn.Module, inputs: list[np.ndarray], y: np.ndarray, n_classes: int, *, epochs: int,
                batch_size: int, lr: float, weight_decay: float, class_weight: str | None, focal_gamma: float,
                oversample: bool, val_fraction: float, patience: int, seed: int, device: torch.device,
                augment: Callable | None = None, progress: Progress | None = None,
                domains: np.ndarray | None = None, domain_adversarial: float = 0.0,
                mixup: float = 0.0) -> list[dict]:
    """Train ``net`` in place and return the per-epoch logs.

    ``inputs`` are arrays with ``n`` rows that ``net(*batch)`` takes (already standardised); ``y`` (n,) holds
    class indices. The best weights by validation loss (training loss without a validation split) are kept.
    ``augment(*batch) -> batch`` is applied to training batches only.

    Several corpora: ``domains`` (n,) holds each row's corpus index (None: one corpus).
    ``domain_adversarial`` > 0, with two or more corpora among the training rows, trains a corpus classifier on
    ``net.embed(*batch)`` (b, ``net.hidden_dim``) behind a gradient-reversal layer whose strength ramps from 0 to
    ``domain_adversarial`` (:func:`dann_ramp`); its cross-entropy (corpora weighted equally) is added to the loss.
    ``mixup`` > 0 trains on mixes ``lam * a + (1 - lam) * b`` of the inputs and one-hot targets of a row ``a`` and
    a partner ``b`` from another corpus (:func:`mixup_partners`), ``lam ~ Beta(mixup, mixup)`` per row. Both
    touch training batches only: the validation loss that stops training is the plain emotion loss. At 0 (the
    defaults) neither draws a random number, so training is exactly as without them.
    """
    rng = np.random.default_rng(seed)
    tr, va = _validation_split(y, val_fraction, seed)
    if oversample:  # after the split, so no clip is both in training and validation
        tr = random_oversample(tr[:, None], y[tr], seed=seed)[0][:, 0]
    weight = (torch.tensor(balanced_class_weights(y[tr], n_classes), dtype=torch.float32, device=device)
              if class_weight == "balanced" else None)
    tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in inputs]
    target = torch.from_numpy(y.astype(np.int64)).to(device)
    va_t = torch.from_numpy(va).to(device)

    net.to(device)
    n_domains = 0 if domains is None else len(np.unique(domains[tr]))
    head = _domain_head(net.hidden_dim, int(domains.max()) + 1).to(device) \
        if domain_adversarial > 0 and n_domains > 1 else None
    if head is not None:
        domain_hot = F.one_hot(torch.from_numpy(domains.astype(np.int64)), int(domains.max()) + 1).float().to(device)
        domain_weight = torch.tensor(balanced_class_weights(domains[tr], domain_hot.shape[1]), dtype=torch.float32,
                                     device=device)  # each corpus counts alike, however many clips it has
    class_hot = F.one_hot(target, n_classes).float() if mixup > 0 else None
    opt = torch.optim.Adam(net.parameters() if head is None else [*net.parameters(), *head.parameters()], lr=lr,
                           weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, patience // 3))
    best, best_state, wait, history = math.inf, copy.deepcopy(net.state_dict()), 0, []
    step, steps = 0, epochs * math.ceil(len(tr) / batch_size)  # the reversal ramp's clock: the planned steps
    for epoch in range(1, epochs + 1):
        net.train()
        order, total, domain_total = rng.permutation(tr), 0.0, 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            b = torch.from_numpy(rows).to(device)
            batch, soft, b2, lam = [t[b] for t in tensors], None, b, None
            if mixup > 0:
                lam = torch.from_numpy(rng.beta(mixup, mixup, len(rows)).astype(np.float32)).to(device)
                b2 = torch.from_numpy(mixup_partners(rows, domains, tr, rng)).to(device)
                batch = [_mix(x, t[b2], lam) for x, t in zip(batch, tensors)]
                soft = _mix(class_hot[b], class_hot[b2], lam)  # (b, classes)
            if augment is not None:
                batch = augment(*batch)
            if head is None:
                logits = net(*batch)
            else:
                h = net.embed(*batch)  # (b, hidden_dim)
                logits = net.classify(h)
            loss = _loss(logits, target[b], weight, focal_gamma) if soft is None else \
                _soft_loss(logits, soft, weight, focal_gamma)
            objective = loss
            if head is not None:
                corpus = domain_hot[b] if lam is None else _mix(domain_hot[b], domain_hot[b2], lam)
                scale = domain_adversarial * dann_ramp(step / steps)
                domain_loss = _soft_loss(head(grad_reverse(h, scale)), corpus, domain_weight, 0.0)
                objective = loss + domain_loss
                domain_total += domain_loss.item() * len(b)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            step += 1
            total += loss.item() * len(b)
        logs = {"loss": total / len(order), "lr": opt.param_groups[0]["lr"]}
        if head is not None:
            logs["domain_loss"] = domain_total / len(order)
        if len(va):
            logits = _logits(net, [t[va_t] for t in tensors], 256)
            logs["val_loss"] = F.cross_entropy(logits, target[va_t], weight=weight).item()
            logs["val_acc"] = (logits.argmax(1) == target[va_t]).float().mean().item()
        monitor = logs.get("val_loss", logs["loss"])
        sched.step(monitor)
        if monitor < best - 1e-4:
            best, best_state, wait = monitor, copy.deepcopy(net.state_dict()), 0
        else:
            wait += 1
        logs["best"] = best
        history.append({"epoch": epoch, **logs})
        if progress is not None:
            progress(epoch, logs)
        if len(va) and wait >= patience:
            break
    net.load_state_dict(best_state)
    net.eval()
    return history


# -- networks ----------------------------------------------------------------------------------------------
class _MLP(nn.Module):
    def __init__(self, d_in: int, hidden, n_classes: int, dropout: float):
        super().__init__()
        layers, d = [], d_in
        for h in hidden:
            layers += [nn.Linear(d, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            d = int(h)
        layers.append(nn.Linear(d, n_classes))  # logits; softmax in predict_proba
        self.net = nn.Sequential(*layers)  # one Sequential, so saved state dicts keep their keys
        self.hidden_dim = d

    def embed(self, x):  # (b, d) -> (b, hidden_dim): the last hidden layer, after its dropout
        return self.net[:-1](x)

    def classify(self, h):  # (b, hidden_dim) -> (b, classes)
        return self.net[-1](h)

    def forward(self, x):  # (b, d) -> (b, classes)
        return self.net(x)


def sinusoidal_encoding(n_frames: int, d_model: int) -> torch.Tensor:
    """(n_frames, d_model) fixed positional encoding of Vaswani et al. (2017)."""
    pos = torch.arange(n_frames, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(n_frames, d_model)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
    return pe


class _Encoder(nn.Module):
    def __init__(self, d_in: int, n_frames: int, n_classes: int, d_model: int, n_heads: int, n_layers: int,
                 dim_feedforward: int, dropout: float, positional: str, attention_pool: bool):
        super().__init__()
        self.proj = nn.Linear(d_in, d_model)
        if positional == "learned":
            self.pos = nn.Parameter(0.02 * torch.randn(n_frames, d_model))
        else:
            self.register_buffer("pos", sinusoidal_encoding(n_frames, d_model), persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward, dropout, batch_first=True,
                                           norm_first=True)  # pre-norm trains stably without warm-up
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.score = nn.Linear(d_model, 1) if attention_pool else None
        self.hidden_dim = d_model * (2 if attention_pool else 1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.hidden_dim, n_classes))

    def forward(self, x, valid):  # -> (b, classes)
        return self.classify(self.embed(x, valid))

    def classify(self, h):  # (b, hidden_dim) -> (b, classes)
        return self.head(h)

    def embed(self, x, valid):  # x (b, frames, d) standardised, valid (b, frames) bool -> (b, hidden_dim)
        h = self.encoder(self.proj(x) + self.pos[: x.shape[1]], src_key_padding_mask=~valid)
        h = self.norm(h)  # (b, frames, d_model)
        m = valid[..., None].to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # masked mean
        if self.score is not None:
            a = torch.softmax(self.score(h)[..., 0].masked_fill(~valid, -torch.inf), dim=1)
            pooled = torch.cat([pooled, (a[..., None] * h).sum(1)], dim=1)
        return pooled


def _spec_augment(max_time: float, max_freq: float):
    """SpecAugment-style masking of one random frame span and one feature band per clip (set to 0, the
    standardised mean); spans are up to ``max_time`` of the clip's valid frames and ``max_freq`` of the dims."""
    def augment(x, valid):
        b, t, d = x.shape
        dev = x.device
        length = valid.sum(1, keepdim=True).clamp(min=1)  # (b, 1) valid frames come first after padding
        wt = (torch.rand(b, 1, device=dev) * max_time * length).floor()
        st = (torch.rand(b, 1, device=dev) * (length - wt + 1)).floor()
        ar = torch.arange(t, device=dev)[None]
        tmask = (ar >= st) & (ar < st + wt)  # (b, t)
        wf = (torch.rand(b, 1, device=dev) * max_freq * d).floor()
        sf = (torch.rand(b, 1, device=dev) * (d - wf + 1)).floor()
        af = torch.arange(d, device=dev)[None]
        fmask = (af >= sf) & (af < sf + wf)  # (b, d)
        return x.masked_fill(tmask[:, :, None] | fmask[:, None, :], 0.0), valid
    return augment


# -- models ------------------------------------------------------------------------------------------------
class TorchModel(SERModel):
    """Common fit/predict/save of the PyTorch family; subclasses define the inputs and the network."""

    framework = "torch"

    def _check_params(self):
        if self.class_weight not in (None, "balanced"):
            raise ConfigError(f"class_weight must be 'balanced' or None, not {self.class_weight!r}.")
        if int(self.epochs) < 1 or int(self.batch_size) < 1 or int(self.patience) < 1:
            raise ConfigError("epochs, batch_size and patience must be positive integers.")
        if not 0 <= self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in [0, 0.5), not {self.val_fraction}.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), not {self.dropout}.")
        if self.lr <= 0 or self.weight_decay < 0 or self.focal_gamma < 0:
            raise ConfigError("lr must be positive and weight_decay and focal_gamma non-negative.")
        if self.domain_adversarial < 0 or self.mixup < 0:
            raise ConfigError("domain_adversarial and mixup must be non-negative (0 turns them off).")

    def _train_options(self) -> dict:
        return dict(epochs=int(self.epochs), batch_size=int(self.batch_size), lr=float(self.lr),
                    weight_decay=float(self.weight_decay), class_weight=self.class_weight,
                    focal_gamma=float(self.focal_gamma), oversample=bool(self.oversample),
                    val_fraction=float(self.val_fraction), patience=int(self.patience), seed=int(self.seed),
                    domain_adversarial=float(self.domain_adversarial), mixup=float(self.mixup))

    # subclasses: input rank, network, standardisation
    ndim: int = 2

    def _build(self, input_shape: tuple, n_classes: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _learn_stats(self, X: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError

    def _inputs(self, X: np.ndarray) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _augment(self):
        return None

    def _check_X(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != self.ndim:
            kind = "(n_clips, features)" if self.ndim == 2 else "(n_clips, frames, features)"
            raise ModelError(f"Model '{self.name}' needs features of shape {kind}, got {X.shape}; "
                             f"use the feature set '{self.feature_set}'.")
        if hasattr(self, "input_shape_") and tuple(X.shape[1:]) != tuple(self.input_shape_):
            raise ModelError(f"Model '{self.name}' was trained on inputs of shape {tuple(self.input_shape_)} "
                             f"per clip but got {tuple(X.shape[1:])}; use the feature set '{self.feature_set}'.")
        return X

    def fit(self, X, y, progress: Progress | None = None, domains=None):
        """Train on ``X`` and labels ``y`` (n,); ``progress(epoch, logs)`` is called after every epoch.
        ``domains`` (n,): each row's corpus, for ``domain_adversarial`` and ``mixup`` (None: one corpus)."""
        self._check_params()
        X, y = check_training_data(X, y, self.name)
        if domains is not None:
            domains = np.asarray(domains).astype(str)
            if domains.shape != y.shape:
                raise ModelError(f"Model '{self.name}' got {len(y)} labels but {domains.size} domains (corpora); "
                                 "they must match.")
            domains = np.unique(domains, return_inverse=True)[1]  # (n,) corpus indices
        for attr in ("classes_", "input_shape_", "net_"):  # a failed fit leaves the model unfitted
            self.__dict__.pop(attr, None)
        X = self._check_X(X)
        classes, y_idx = np.unique(y, return_inverse=True)
        self.input_shape_ = tuple(X.shape[1:])
        self.device_ = select_device(self.device)
        _set_threads()
        fork = [self.device_.index or 0] if self.device_.type == "cuda" else []
        with torch.random.fork_rng(devices=fork):
            torch.manual_seed(int(self.seed))
            self._learn_stats(X)
            self.net_ = self._build(self.input_shape_, len(classes))
            self.history_ = fit_network(self.net_, self._inputs(X), y_idx, len(classes), device=self.device_,
                                        augment=self._augment(), progress=progress, domains=domains,
                                        **self._train_options())
        self.classes_ = classes
        return self

    def predict_proba(self, X) -> np.ndarray:
        """``(n, len(classes_))`` softmax probabilities; rows sum to 1."""
        self._check_fitted()
        X = self._check_X(X)
        if len(X) == 0:
            return np.zeros((0, len(self.classes_)))
        _set_threads()
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device_) for a in self._inputs(X)]
        p = torch.softmax(_logits(self.net_, tensors, 256).float(), dim=1).cpu().numpy().astype(np.float64)
        return p / p.sum(1, keepdims=True)

    def _save_state(self, directory: Path):
        state = {k: v.detach().cpu() for k, v in self.net_.state_dict().items()}
        torch.save({"state_dict": state, "mean": torch.from_numpy(self.mean_), "std": torch.from_numpy(self.std_),
                    "input_shape": list(self.input_shape_), "history": self.history_}, directory / WEIGHTS_FILE)

    def _load_state(self, directory: Path):
        path = directory / WEIGHTS_FILE
        if not path.is_file():
            raise ModelError(f"Saved model in '{directory}' lacks {WEIGHTS_FILE}; save it again.")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        self.mean_, self.std_ = blob["mean"].numpy(), blob["std"].numpy()
        self.input_shape_ = tuple(blob["input_shape"])
        self.history_ = blob.get("history", [])
        self.device_ = select_device(self.device)
        self.net_ = self._build(self.input_shape_, len(self.classes_))
        self.net_.load_state_dict(blob["state_dict"])
        self.net_.to(self.device_).eval()


class TorchFCNN(TorchModel):
    """Fully connected net on utterance features ``(n, d)``: standardise, [Linear-ReLU-Dropout] x len(hidden),
    Linear, softmax."""

    name = "fcnn_torch"
    ndim = 2

    def __init__(self, feature_set: str = "rich", seed: int = 0, hidden=(512, 256),
                 dropout: float = 0.3, epochs: int = 150, batch_size: int = 32, lr: float = 1e-3,
                 weight_decay: float = 1e-4, class_weight: str | None = None, focal_gamma: float = 0.0,
                 oversample: bool = False, val_fraction: float = 0.1, patience: int = 20,
                 domain_adversarial: float = 0.0, mixup: float = 0.0, device: str | None = None):
        self.feature_set = feature_set
        self.seed = seed
        self.hidden = hidden
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.class_weight = class_weight
        self.focal_gamma = focal_gamma
        self.oversample = oversample
        self.val_fraction = val_fraction
        self.patience = patience
        self.domain_adversarial = domain_adversarial
        self.mixup = mixup
        self.device = device  # None: select_device()
        self._check_params()

    def _check_params(self):
        super()._check_params()
        if not len(self.hidden) or any(int(h) < 1 for h in self.hidden):
            raise ConfigError(f"hidden must list positive layer widths, not {self.hidden!r}.")

    def _learn_stats(self, X):
        self.mean_ = X.mean(0)
        std = X.std(0)
        self.std_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)

    def _inputs(self, X):
        return [((X - self.mean_) / self.std_).astype(np.float32)]

    def _build(self, input_shape, n_classes):
        return _MLP(int(input_shape[0]), self.hidden, n_classes, float(self.dropout))


class TorchTransformer(TorchModel):
    """Transformer encoder over frame sequences ``(n, frames, d)``. Frames that are all zero are padding: they
    are masked in attention and pooling. Per-feature standardisation uses the valid training frames only."""

    name = "transformer_torch"
    ndim = 3

    def __init__(self, feature_set: str = "mfcc_seq", seed: int = 0, d_model: int = 64, n_heads: int = 4,
                 n_layers: int = 2, dim_feedforward: int = 128, dropout: float = 0.2,
                 positional: str = "sinusoidal", attention_pool: bool = True, frame_stride: int = 4,
                 epochs: int = 60,
                 batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 1e-4,
                 class_weight: str | None = None, focal_gamma: float = 0.0, oversample: bool = False,
                 val_fraction: float = 0.1, patience: int = 12, augment: bool = True,
                 time_mask: float = 0.15, freq_mask: float = 0.15, domain_adversarial: float = 0.0,
                 mixup: float = 0.0, device: str | None = None):
        self.feature_set = feature_set
        self.seed = seed
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.dim_feedforward = dim_feedforward
        self.dropout = dropout
        self.positional = positional  # "sinusoidal" | "learned"
        self.attention_pool = attention_pool  # masked mean pooling, plus attention pooling when True
        self.frame_stride = frame_stride  # average groups of frames first: attention cost falls with stride^2
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.class_weight = class_weight
        self.focal_gamma = focal_gamma
        self.oversample = oversample
        self.val_fraction = val_fraction
        self.patience = patience
        self.augment = augment  # SpecAugment-style masks on training batches (+0.03 UAR on RAVDESS)
        self.time_mask = time_mask  # largest masked span, as a fraction of the clip's frames
        self.freq_mask = freq_mask  # largest masked band, as a fraction of the feature dims
        self.domain_adversarial = domain_adversarial
        self.mixup = mixup
        self.device = device
        self._check_params()

    def _check_params(self):
        super()._check_params()
        if self.positional not in ("sinusoidal", "learned"):
            raise ConfigError(f"positional must be 'sinusoidal' or 'learned', not {self.positional!r}.")
        if int(self.d_model) < 2 or int(self.d_model) % 2 or int(self.d_model) % int(self.n_heads):
            raise ConfigError(f"d_model ({self.d_model}) must be even and divisible by n_heads ({self.n_heads}).")
        if int(self.n_layers) < 1 or int(self.dim_feedforward) < 1 or int(self.frame_stride) < 1:
            raise ConfigError("n_layers, dim_feedforward and frame_stride must be positive integers.")
        if not (0 <= self.time_mask < 1 and 0 <= self.freq_mask < 1):
            raise ConfigError("time_mask and freq_mask must be fractions in [0, 1).")

    @staticmethod
    def _valid(X):  # (n, frames) True for frames holding any non-zero value
        valid = np.any(X != 0, axis=2)
        valid[~valid.any(1), 0] = True  # an all-silent clip keeps one frame so attention has a key
        return valid

    def _learn_stats(self, X):
        frames = X[self._valid(X)]  # (valid frames, d)
        self.mean_ = frames.mean(0)
        std = frames.std(0)
        self.std_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)

    def _inputs(self, X):
        """[(n, frames / frame_stride, d) standardised frames, (n, frames / frame_stride) valid mask]."""
        valid = self._valid(X)
        Z = ((X - self.mean_) / self.std_).astype(np.float32)
        Z[~valid] = 0.0
        s = int(self.frame_stride)
        if s > 1:  # masked average of non-overlapping groups of s frames
            n, t, d = Z.shape
            pad = -t % s
            Z = np.pad(Z, ((0, 0), (0, pad), (0, 0))).reshape(n, -1, s, d)
            w = np.pad(valid, ((0, 0), (0, pad))).reshape(n, -1, s)
            cnt = w.sum(2, keepdims=True)
            Z = (Z.sum(2) / np.maximum(cnt, 1)).astype(np.float32)
            valid = cnt[..., 0] > 0
        return [Z, valid]

    def _augment(self):
        return _spec_augment(float(self.time_mask), float(self.freq_mask)) if self.augment else None

    def _build(self, input_shape, n_classes):
        frames, d = (int(v) for v in input_shape)
        frames = -(-frames // int(self.frame_stride))
        return _Encoder(d, frames, n_classes, int(self.d_model), int(self.n_heads), int(self.n_layers),
                        int(self.dim_feedforward), float(self.dropout), self.positional, bool(self.attention_pool))


__all__ = ["select_device", "fit_network", "grad_reverse", "dann_ramp", "mixup_partners", "sinusoidal_encoding",
           "TorchModel", "TorchFCNN", "TorchTransformer"]
