"""Choosing the next token from logits: greedy, or temperature / top-k / top-p sampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """``temperature`` 0 is greedy; ``top_k`` 0 and ``top_p`` 1 disable those filters;
    a ``seed`` makes sampling reproducible."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


class Sampler:
    """Picks tokens for one request; its random generator is seeded once per request.

    Nothing sorts the whole vocabulary: top_k partitions out its k best, top_p sorts a
    head that grows until it holds the nucleus (a 128k vocabulary took 15 ms a token with a
    full sort, most of a decode step)."""

    #: The first head examined for the top_p nucleus (grown ×8 while too small).
    HEAD = 64

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        """The next token id from one row of logits (any float dtype)."""
        p = self.params
        if p.greedy:
            return int(np.argmax(logits))
        scores = logits.astype(np.float64) / p.temperature
        size = scores.shape[0]
        if 0 < p.top_k < size:
            candidates = _best(scores, p.top_k)
        elif p.top_p < 1.0:
            candidates = None
        else:
            candidates = np.arange(size)
        if candidates is not None:
            weights = np.exp(scores[candidates] - scores[candidates].max())
            total = weights.sum()
            if p.top_p < 1.0:
                keep = _nucleus(weights, total, p.top_p)
                candidates, weights, total = candidates[:keep], weights[:keep], weights[:keep].sum()
        else:
            # top_p over the whole vocabulary: sort a head big enough to hold the nucleus.
            weights_all = np.exp(scores - scores.max())
            whole = weights_all.sum()
            head = self.HEAD
            while True:
                candidates = _best(scores, min(head, size))
                weights = weights_all[candidates]
                if head >= size or weights.sum() >= p.top_p * whole:
                    break
                head *= 8
            keep = _nucleus(weights, whole, p.top_p)
            candidates, weights = candidates[:keep], weights[:keep]
            total = weights.sum()
        # What ``rng.choice(n, p=weights / total)`` does, without its checks of p.
        cdf = np.cumsum(weights)
        pick = int(np.searchsorted(cdf / cdf[-1], self._rng.random(), side="right"))
        return int(candidates[min(pick, len(candidates) - 1)])


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest-scoring ids, best first (ties: lower id first)."""
    if k < scores.shape[0]:
        ids = np.sort(np.argpartition(scores, -k)[-k:])
    else:
        ids = np.arange(scores.shape[0])
    return ids[np.argsort(-scores[ids], kind="stable")]


def _nucleus(weights: np.ndarray, total: float, top_p: float) -> int:
    """How many of ``weights`` (sorted, best first; ``total`` the whole mass) make the
    smallest head whose mass reaches ``top_p`` (at least one)."""
    mass = np.cumsum(weights) / total
    return min(int(np.searchsorted(mass, top_p) + 1), len(weights))


__all__ = ["Sampler", "SamplingParams"]
