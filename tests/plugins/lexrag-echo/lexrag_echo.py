"""A minimal third-party plugin: the ``echo`` provider repeats the last user message."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel

from lexrag import Provider, ProviderRequest, hookimpl
from lexrag.types import ChatCompletion, ChatCompletionChunk, ChunkFactory, Usage


class EchoSettings(BaseModel):
    prefix: str = ""


class EchoProvider(Provider):
    Settings = EchoSettings

    def _text(self, request: ProviderRequest) -> str:
        last = [m for m in request.messages if m.role == "user"][-1]
        assert isinstance(self.settings, EchoSettings)
        return self.settings.prefix + (last.content or "")

    async def complete(self, request: ProviderRequest) -> ChatCompletion:
        text = self._text(request)
        return ChatCompletion.of_text(self.default_model, text, "stop", Usage.of(1, len(text.split())))

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ChatCompletionChunk]:
        text = self._text(request)
        chunks = ChunkFactory(self.default_model)
        yield chunks.role()
        for word in text.split(" "):
            yield chunks.text(word + " ")
        yield chunks.finish("stop")


@hookimpl
def register_llm_providers(register):
    register("echo", EchoProvider)
