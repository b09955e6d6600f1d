"""A document quality classifier you train: fastText's supervised architecture (Joulin et al.
2017, "Bag of Tricks for Efficient Text Classification"), as DCLM used it with word bigrams
(Li et al. 2024, arXiv:2406.11794), written in numpy (no fastText training in our dependencies).

Features
    the lowercased words of the text (``\\w+`` runs) and its word bigrams, each hashed (CRC-32,
    stable across processes and machines) into one of `buckets` rows of an embedding table.
Model
    the document vector is the mean of its features' rows (`dim` floats); its score is
    ``sigmoid(w . mean + b)``, the probability of the positive (curated) class.
Training
    plain SGD on the logistic loss, one document at a time in a seeded random order per epoch,
    the learning rate decaying linearly from `lr` to 0 over all steps (fastText's schedule);
    embeddings start uniform in +-1/dim (seeded), the output weights at 0. Rows no training
    document touched are zeroed before saving: an unseen word adds nothing but weight to the mean
    (and the file compresses). Every reduction is a numpy ufunc sum (no BLAS call, whose thread
    count could change the order of additions), so a document's score is the same bits in every
    process, with any number of workers.
Held-out split
    a document is held out when the SHA-1 of its text falls in the first `holdout` fraction:
    deterministic, and duplicates land on the same side. Precision, recall and F1 of the positive
    class at score 0.5 are printed and written as JSON beside the model (`eval_path`).
Model file
    one ``.npz``: ``embeddings`` (buckets x dim, float32), ``weights``, ``bias`` and ``meta`` (JSON:
    format name and version, hyper-parameters, the held-out evaluation, and the score quantiles of
    the negatives, with which ``top_fraction`` resolves to a threshold).

Input files (`read_texts`, with `refine.documents`' reader): a directory (a run's ``data/``, or the
run directory itself) gives the ``text`` column of its ``*.parquet`` files, in name order;
``FILE.parquet`` its ``text`` column; ``FILE.jsonl`` / ``.json`` one JSON object per line with a
string ``text``; any other file is plain text, one document per non-blank line (fastText's
training format). Text files may be compressed (.gz, .bz2, .xz, .zst). Empty texts are skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refine.documents import DataError, MissingDataError, read_documents

FORMAT = "refine-quality-classifier"
VERSION = 1
QUANTILES = 1001  # points of the negatives' score distribution kept in the model
_WORD = re.compile(r"\w+")
_BIGRAM_MIX = np.uint64(116049371)  # fastText's n-gram hash multiplier


class ClassifierError(ValueError):
    """A model file or an input that cannot be used: the message says which and why."""


# --- features and the model ----------------------------------------------------------------------


def features(text: str, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket indices, weights summing to 1) of `text`'s words and word bigrams; empty arrays
    for a text without words. Repeated features are merged (their weights add up)."""
    words = _WORD.findall(text.lower())
    if not words:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    crc = zlib.crc32
    h = np.fromiter((crc(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))
    grams = h[:-1] * _BIGRAM_MIX + h[1:] + np.uint64(1)  # wraps modulo 2**64: deterministic
    ids = np.concatenate([h, grams]) % np.uint64(buckets)
    index, counts = np.unique(ids.astype(np.int64), return_counts=True)
    return index, counts / counts.sum()


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + np.exp(-z)) if z >= 0 else np.exp(z) / (1.0 + np.exp(z))


@dataclass
class QualityModel:
    embeddings: np.ndarray  # (buckets, dim) float32
    weights: np.ndarray  # (dim,) float64
    bias: float
    meta: dict[str, Any]

    @property
    def buckets(self) -> int:
        return int(self.embeddings.shape[0])

    def hidden(self, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
        if not len(index):
            return np.zeros(self.embeddings.shape[1], dtype=np.float64)
        return (self.embeddings[index].astype(np.float64) * weight[:, None]).sum(axis=0)

    def score(self, text: str) -> float:
        """P(positive) of `text`, in [0, 1]."""
        h = self.hidden(*features(text, self.buckets))
        return float(_sigmoid(float((h * self.weights).sum()) + self.bias))

    def threshold_for_top_fraction(self, fraction: float) -> float:
        return top_fraction_threshold(self.meta, fraction)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, embeddings=self.embeddings.astype(np.float32),
                                weights=self.weights.astype(np.float64),
                                bias=np.array(self.bias, dtype=np.float64),
                                meta=np.array(json.dumps(self.meta, sort_keys=True)))
        tmp.replace(path)
        return path


def top_fraction_threshold(meta: dict[str, Any], fraction: float) -> float:
    """The score above which `fraction` of the negatives the model was trained against lie."""
    q = np.asarray(meta["negative_score_quantiles"], dtype=np.float64)
    return float(np.interp(1.0 - fraction, np.linspace(0.0, 1.0, len(q)), q))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_meta(path: str | Path) -> dict[str, Any]:
    """The model file's metadata, checked (format and version), without loading its table."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ClassifierError(f"{path}: no such model file (train one with "
                              "'refine classifier train')")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"embeddings", "weights", "bias", "meta"} - set(npz.files)
            if missing:
                raise ClassifierError(f"{path}: not a {FORMAT} file (missing "
                                      f"{', '.join(sorted(missing))})")
            meta = json.loads(str(npz["meta"]))
    except ClassifierError:
        raise
    except Exception as error:  # not a zip, not .npz, bad JSON: one message
        raise ClassifierError(f"{path}: not a {FORMAT} file ({type(error).__name__}: "
                              f"{error})") from None
    if meta.get("format") != FORMAT:
        raise ClassifierError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise ClassifierError(f"{path}: {FORMAT} version {meta.get('version')!r}; this refine "
                              f"reads version {VERSION}")
    if len(meta.get("negative_score_quantiles") or ()) < 2:
        raise ClassifierError(f"{path}: no negative_score_quantiles in its metadata")
    return meta


def load_model(path: str | Path) -> QualityModel:
    meta = read_meta(path)
    with np.load(Path(path).expanduser(), allow_pickle=False) as npz:
        embeddings = npz["embeddings"].astype(np.float32, copy=False)
        weights = npz["weights"].astype(np.float64, copy=False)
        bias = float(npz["bias"])
    if embeddings.ndim != 2 or weights.shape != (embeddings.shape[1],):
        raise ClassifierError(f"{path}: embeddings {embeddings.shape} and weights "
                              f"{weights.shape} do not fit together")
    return QualityModel(embeddings, weights, bias, meta)


# --- training ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    dim: int = 32
    buckets: int = 1 << 18
    epochs: int = 5
    lr: float = 1.0  # fastText's advice for small data sets (its default, 0.1, underfits here)
    seed: int = 0
    holdout: float = 0.1  # fraction of documents held out (by hash of their text)

    def check(self) -> None:
        if self.dim < 1 or self.buckets < 16 or self.epochs < 1 or self.lr <= 0:
            raise ClassifierError(f"bad training settings: {self}")
        if not 0.0 <= self.holdout < 1.0:
            raise ClassifierError(f"holdout must be in [0, 1), got {self.holdout}")


def held_out(text: str, fraction: float) -> bool:
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2.0**64


def train(positives: Iterable[str], negatives: Iterable[str],
          config: TrainConfig = TrainConfig()) -> tuple[QualityModel, dict[str, Any]]:
    """Train on the texts (positives: label 1); returns the model and its held-out evaluation."""
    config.check()
    splits: dict[bool, tuple[list[str], list[int]]] = {False: ([], []), True: ([], [])}
    for label, texts in ((1, positives), (0, negatives)):
        for text in texts:
            if text and text.strip():
                side = splits[held_out(text, config.holdout)]
                side[0].append(text)
                side[1].append(label)
    train_texts, train_labels = splits[False]
    counts = {label: train_labels.count(label) for label in (0, 1)}
    if not counts[0] or not counts[1]:
        raise ClassifierError(f"training needs positives and negatives; after the held-out split "
                              f"there are {counts[1]} positive and {counts[0]} negative documents")
    rng = np.random.default_rng(config.seed)
    bound = 1.0 / config.dim
    embeddings = rng.uniform(-bound, bound, (config.buckets, config.dim)).astype(np.float32)
    touched = np.zeros(config.buckets, dtype=bool)
    weights = np.zeros(config.dim, dtype=np.float64)
    bias = 0.0
    feats = [features(t, config.buckets) for t in train_texts]
    for index, _ in feats:
        touched[index] = True
    labels = np.asarray(train_labels, dtype=np.float64)
    total, step = config.epochs * len(feats), 0
    for _ in range(config.epochs):
        for i in rng.permutation(len(feats)).tolist():
            lr = config.lr * (1.0 - step / total)
            step += 1
            index, weight = feats[i]
            if not len(index):
                continue
            rows = embeddings[index].astype(np.float64)
            h = (rows * weight[:, None]).sum(axis=0)
            g = _sigmoid(float((h * weights).sum()) + bias) - labels[i]  # d loss / d logit
            grad_h = g * weights
            weights -= lr * g * h
            bias -= lr * g
            embeddings[index] = (rows - lr * weight[:, None] * grad_h).astype(np.float32)
    embeddings[~touched] = 0.0
    meta = {"format": FORMAT, "version": VERSION, "dim": config.dim, "buckets": config.buckets,
            "features": "lowercased \\w+ words and word bigrams, CRC-32 hashed",
            "train": {"epochs": config.epochs, "lr": config.lr, "seed": config.seed,
                      "holdout": config.holdout, "positives": counts[1],
                      "negatives": counts[0]}}
    model = QualityModel(embeddings, weights, bias, meta)
    test_texts, test_labels = splits[True]
    evaluation = evaluate(model, test_texts, test_labels)
    negative_scores = [model.score(t) for side in (False, True)
                       for t, y in zip(*splits[side], strict=True) if y == 0]
    meta["negative_score_quantiles"] = np.quantile(
        np.asarray(negative_scores), np.linspace(0.0, 1.0, QUANTILES)).tolist()
    meta["heldout"] = evaluation
    return model, evaluation


def evaluate(model: QualityModel, texts: list[str], labels: list[int],
             threshold: float = 0.5) -> dict[str, Any]:
    """Precision, recall and F1 of the positive class, predicted at score >= `threshold`."""
    predicted = [model.score(t) >= threshold for t in texts]
    tp = sum(p and y == 1 for p, y in zip(predicted, labels, strict=True))
    fp = sum(p and y == 0 for p, y in zip(predicted, labels, strict=True))
    fn = sum((not p) and y == 1 for p, y in zip(predicted, labels, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"documents": len(texts), "positives": labels.count(1), "negatives": labels.count(0),
            "threshold": threshold, "true_positives": tp, "false_positives": fp,
            "false_negatives": fn, "precision": round(precision, 6), "recall": round(recall, 6),
            "f1": round(f1, 6)}


def eval_path(model_path: str | Path) -> Path:
    """Where the held-out evaluation is written: MODEL with the suffix ``.eval.json``."""
    path = Path(model_path)
    return path.with_name(path.name.removesuffix(".npz") + ".eval.json")


# --- reading texts -------------------------------------------------------------------------------


def read_texts(locations: Iterable[str], max_docs: int | None = None) -> Iterator[str]:
    """The non-empty texts of `locations` (files or directories, see the module docstring), in
    order: `refine.documents`' reader, its errors raised as ClassifierError."""
    n = 0
    for location in locations:
        try:
            for _, text in read_documents(str(location)):
                if not text:
                    continue
                if max_docs is not None and n >= max_docs:
                    return
                n += 1
                yield text
        except MissingDataError:
            raise ClassifierError(f"{location}: no such file or directory") from None
        except DataError as error:
            raise ClassifierError(str(error)) from None


def train_files(positive: list[str], negative: list[str], out: str | Path,
                config: TrainConfig = TrainConfig(),
                max_docs: int | None = None) -> tuple[Path, dict[str, Any]]:
    """`refine classifier train`: read, train, save MODEL and MODEL.eval.json beside it."""
    model, evaluation = train(read_texts(positive, max_docs), read_texts(negative, max_docs),
                              config)
    path = model.save(out)
    report = {"model": str(path), "heldout": evaluation, "train": model.meta["train"],
              "positive": list(map(str, positive)), "negative": list(map(str, negative))}
    eval_path(path).write_text(json.dumps(report, indent=2) + "\n")
    return path, evaluation


__all__ = ["ClassifierError", "QualityModel", "TrainConfig", "eval_path", "evaluate", "features",
           "file_sha256",
           "held_out", "load_model", "read_meta", "read_texts", "top_fraction_threshold", "train",
           "train_files"]
