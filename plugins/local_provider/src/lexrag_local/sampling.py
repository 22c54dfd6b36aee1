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
    """Picks tokens for one request; its random generator is seeded once per request."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        """The next token id from one row of logits (any float dtype)."""
        p = self.params
        if p.greedy:
            return int(np.argmax(logits))
        scores = logits.astype(np.float64) / p.temperature
        candidates = np.arange(scores.shape[0])
        if 0 < p.top_k < scores.shape[0]:
            candidates = np.argpartition(scores, -p.top_k)[-p.top_k :]
            scores = scores[candidates]
        order = np.argsort(-scores, kind="stable")
        candidates, scores = candidates[order], scores[order]
        probs = np.exp(scores - scores[0])
        probs /= probs.sum()
        if p.top_p < 1.0:
            # Keep the smallest head whose mass reaches top_p (at least one token).
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p) + 1)
            candidates, probs = candidates[:keep], probs[:keep] / probs[:keep].sum()
        return int(candidates[self._rng.choice(len(candidates), p=probs)])


__all__ = ["Sampler", "SamplingParams"]
