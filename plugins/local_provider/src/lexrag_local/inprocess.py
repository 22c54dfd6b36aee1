"""The in-process backend: the exported model on ONNX Runtime, in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from lexrag import ChatMessage, ConfigError, GenerationParams, Usage

from .backend import Outcome, fit, resolve
from .chat_template import render
from .model_files import (
    MANIFEST_FILE,
    GenerationDefaults,
    ModelShape,
    check_model_dir,
    load_tokenizer,
    read_json,
)
from .sampling import SamplingParams
from .settings import LocalSettings
from .worker import Finished, Job, Worker


def _model_name(model_dir: Path) -> str:
    manifest = model_dir / MANIFEST_FILE
    source = read_json(manifest).get("source") if manifest.is_file() else None
    return Path(source).name if source else model_dir.name


class InProcessBackend:
    """Loads the session lazily (first request or health check), off the event loop."""

    def __init__(self, settings: LocalSettings) -> None:
        if settings.model_dir is None:
            raise ConfigError(
                "[providers.local] needs model_dir (a directory written by `lexrag model export`) "
                "or url (a running llm-service, LOCAL_LLM_API_URL)"
            )
        self.settings = settings
        self.model_dir = settings.model_dir
        check_model_dir(self.model_dir)
        config = read_json(self.model_dir / "config.json")
        window = ModelShape.of(config).context_window
        self.context_window = min(window, settings.max_context or window)
        self.defaults = GenerationDefaults.read(self.model_dir, config)
        self.model_name = settings.model_name or _model_name(self.model_dir)
        self._worker: Worker | None = None
        self._loading: asyncio.Lock | None = None

    @cached_property
    def tokenizer(self) -> Any:
        return load_tokenizer(self.model_dir)

    def count_tokens(self, text: str) -> int | None:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def worker(self) -> Worker:
        if self._worker is None:
            self._loading = self._loading or asyncio.Lock()
            async with self._loading:
                if self._worker is None:
                    self._worker = await asyncio.to_thread(self._load)
        return self._worker

    def _load(self) -> Worker:
        from .engine import Engine

        s = self.settings
        engine = Engine(
            self.model_dir,
            device=s.device,
            threads=s.threads,
            spin=s.spin,
            max_context=self.context_window,
            max_batch=s.max_batch,
            kv_budget_bytes=s.kv_cache_mb * 2**20 if s.kv_cache_mb else None,
        )
        return Worker(
            engine,
            self.tokenizer,
            queue_size=s.queue_size,
            prefill_chunk=s.prefill_chunk,
            prefill_whole_tokens=s.prefill_whole_tokens,
        )

    def prompt_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        text = render(messages, self.tokenizer)
        # The chat template writes <|begin_of_text|> itself.
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str | Outcome]:
        r = resolve(params, self.settings, self.defaults)
        prompt = await asyncio.to_thread(self.prompt_ids, messages)
        max_new = fit(len(prompt), r.max_tokens, self.context_window)
        worker = await self.worker()
        sampling = SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, seed=r.seed)
        async for item in worker.generate(Job(prompt, max_new, sampling, r.stop)):
            if isinstance(item, Finished):
                reason = "stop" if item.reason == "stop" else "length"
                yield Outcome(reason, Usage.of(len(prompt), item.completion_tokens))
            else:
                yield item

    async def health(self) -> dict[str, Any]:
        worker = await self.worker()
        batch = worker.stats()
        return {
            "status": "ok" if worker.scheduler.alive else "down",
            "mode": "in-process",
            "model": self.model_name,
            "model_dir": str(self.model_dir),
            "execution_providers": worker.engine.providers,
            "device": worker.engine.device,
            "graph": "GroupQueryAttention (in-place KV)"
            if worker.engine.shared_kv
            else "optimum (padded KV)",
            "queued": batch["running"] + batch["prefilling"] + batch["waiting"],
            "batch": batch,
        }

    def load(self) -> dict[str, float]:
        """The batch's numbers for ``/metrics`` (nothing before the model is loaded)."""
        return {k: float(v) for k, v in self._worker.stats().items()} if self._worker is not None else {}

    async def aclose(self) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            await asyncio.to_thread(worker.close)


__all__ = ["InProcessBackend"]
