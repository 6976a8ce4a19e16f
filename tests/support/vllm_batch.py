"""`vllm run-batch`'s parser of batch lines, as a stand-in: vLLM itself cannot be installed in a test
environment without its CUDA/torch wheels (hundreds of MB), so its pydantic models are transcribed here,
field by field, from vllm-project/vllm `vllm/entrypoints/openai/run_batch.py` @0056ae7b
(BatchRequestInput, BatchResponseData, BatchRequestOutput) and `chat_completion/protocol.py`
@002032ee (ChatCompletionRequest's OpenAI and sampling fields, ChatCompletionResponse), with vLLM's
`OpenAIBaseModel` behaviour: unknown fields are allowed. Message entries are validated with the
OpenAI SDK's own `ChatCompletionMessageParam`, as vLLM's `chat_utils` does.

What it does not carry over: vLLM's engine-specific validators (sampling-parameter ranges checked
against a loaded model). A line these models accept is one `vllm run-batch` parses.
"""

from __future__ import annotations

from typing import Any, Literal

from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class OpenAIBaseModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatCompletionRequest(OpenAIBaseModel):
    messages: list[ChatCompletionMessageParam]
    model: str | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = 1
    presence_penalty: float | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = []
    stream: bool | None = False
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None


class ChatCompletionLogProb(OpenAIBaseModel):
    token: str
    logprob: float = -9999.0
    bytes: list[int] | None = None


class ChatCompletionLogProbsContent(ChatCompletionLogProb):
    top_logprobs: list[ChatCompletionLogProb] = Field(default_factory=list)


class ChatCompletionLogProbs(OpenAIBaseModel):
    content: list[ChatCompletionLogProbsContent] | None = None


class ChatMessage(OpenAIBaseModel):
    role: str
    content: str | None = None


class ChatCompletionResponseChoice(OpenAIBaseModel):
    index: int
    message: ChatMessage
    logprobs: ChatCompletionLogProbs | None = None
    finish_reason: str | None = "stop"


class UsageInfo(OpenAIBaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0


class ChatCompletionResponse(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionResponseChoice]
    system_fingerprint: str | None = None
    usage: UsageInfo


class BatchRequestInput(OpenAIBaseModel):
    custom_id: str
    method: str
    url: str
    body: Any

    @field_validator("body", mode="plain")
    @classmethod
    def check_type_for_url(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data["url"] == "/v1/chat/completions":
            return ChatCompletionRequest.model_validate(value)
        return value


class BatchResponseData(OpenAIBaseModel):
    status_code: int = 200
    request_id: str
    body: ChatCompletionResponse | None = None


class BatchRequestOutput(OpenAIBaseModel):
    id: str
    custom_id: str
    response: BatchResponseData | None
    error: Any | None
