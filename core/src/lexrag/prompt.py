"""The RAG prompt: the one place its wording lives (overridable by ``[prompt]``)."""

from __future__ import annotations

DEFAULT_SYSTEM_PROMPT = (
    "Bạn là trợ lý pháp lý tiếng Việt. Hãy trả lời câu hỏi của người dùng chỉ dựa trên "
    "các đoạn văn bản pháp luật được đánh số dưới đây. Khi dùng thông tin từ một đoạn, "
    "hãy trích dẫn số của đoạn đó trong ngoặc vuông, ví dụ [1]. Nếu các đoạn không đủ để "
    "trả lời, hãy nói rõ là không tìm thấy quy định phù hợp; không được bịa đặt."
)

DEFAULT_PASSAGE_TEMPLATE = "[{index}] {citation}\n{text}"

DEFAULT_CONTEXT_HEADER = "Các đoạn văn bản pháp luật liên quan:"
