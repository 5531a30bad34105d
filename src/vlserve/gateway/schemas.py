"""Request and response models: the OpenAI chat subset we validate, and our simple endpoints.

Chat requests keep unknown fields (`extra="allow"`): engines accept sampling options
OpenAI doesn't have (top_k, repetition_penalty, mm_processor_kwargs, ...) and we pass
them through rather than guess which ones matter.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vlserve.analysis import TASK_NAMES, describe_tasks


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str
    detail: Literal["auto", "low", "high"] | None = None
    # Qwen-VL's per-image pixel bounds; narrowed to the operator's budget, never widened.
    min_pixels: int | None = Field(None, ge=1)
    max_pixels: int | None = Field(None, ge=1)


class VideoURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str


class FileData(BaseModel):
    """OpenAI's file part: a PDF inline (`file_data`, a data URL or base64); `file_id`
    names a file uploaded to OpenAI's Files API, which this server does not have."""

    model_config = ConfigDict(extra="allow")
    file_data: str | None = None
    filename: str | None = None
    file_id: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "image_url", "video_url", "file"]
    text: str | None = None
    image_url: ImageURL | None = None
    video_url: VideoURL | None = None
    file: FileData | None = None
    # vLLM takes a part's `uuid` as the name of its image and reuses whatever it cached under
    # that name: a client's own would let it claim another client's image. The gateway names
    # images itself (upstream/dialect.py); a client's is dropped.
    uuid: object = Field(None, exclude=True)

    @field_validator("image_url", "video_url", mode="before")
    @classmethod
    def _url_as_string(cls, value: object) -> object:
        # Some clients send {"image_url": "data:..."}; OpenAI's shape is {"url": ...}.
        return {"url": value} if isinstance(value, str) else value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class SamplingFields(BaseModel):
    """Sampling options shared by every endpoint; None means "use the server default"."""

    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = None
    stop: str | list[str] | None = None
    repetition_penalty: float | None = Field(None, ge=0.01, le=10)
    ignore_eos: bool | None = Field(None, description="Generate exactly max_tokens (LMDeploy's and vLLM's field).")


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str | None = None
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionRequest(SamplingFields):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1)
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=true")
        return self


class CompletionRequest(SamplingFields):
    """The completions API (a raw prompt, no chat template); unknown fields pass through."""

    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20, description="How many alternatives to report per token.")
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("logprobs", mode="before")
    @classmethod
    def _logprobs_is_a_count(cls, value: object) -> object:
        # `false` means none (pydantic would read it as 0: one score per token); `true` has
        # no count: this API's logprobs is the number of alternatives.
        if value is False:
            return None
        if value is True:
            raise ValueError("logprobs is the number of alternatives per token (0-20), not true")
        return value


class InferRequest(SamplingFields):
    prompt: str = Field(min_length=1, description="What to ask or say.")
    image: str | None = Field(None, description="Optional image: data URL, raw base64 or http(s) URL.")
    system_prompt: str | None = None
    model: str | None = Field(None, description="Model id; defaults to the served model.")
    stream: bool = False


# The task names come from the one registry of tasks (analysis/tasks.py).
AnalyzeTask = Literal[TASK_NAMES]  # type: ignore[valid-type]


class AnalyzeRequest(SamplingFields):
    model_config = ConfigDict(populate_by_name=True)
    task: AnalyzeTask = Field(description=describe_tasks())
    image: str | None = Field(None, description="An image or a PDF: data URL, raw base64 or http(s) URL.")
    images: list[str] | None = Field(None, description="Several images (task=compare).")
    pages: str | None = Field(None, description="A PDF's pages to read, e.g. \"1-3,7\"; default all.")
    per_page: bool = Field(False, description="extract on a PDF: one object per page instead of one merged.")
    stream: bool = Field(False, description="A PDF: one SSE event per page as it is done, then the whole answer.")
    question: str | None = Field(None, description="For qa and compare.")
    objects: list[str] | None = Field(None, description="What to find (detect, point); empty: everything.")
    boxes: bool = Field(False, description="ocr: return each line with its box.")
    format: Literal["markdown", "html"] = Field("markdown", description="document: output format.")
    json_schema: dict[str, Any] | None = Field(None, alias="schema", description="extract: a JSON Schema.")
    prompt: str | None = Field(None, description="Replaces the task's built-in prompt.")
    language: str | None = Field(None, description="Answer in this language (caption, describe, qa, compare).")
    model: str | None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class InferResponse(BaseModel):
    text: str = Field(description="The answer (a Thinking model's reasoning is not part of it).")
    reasoning: str | None = Field(None, description="A Thinking model's reasoning, when it sent one.")
    model: str
    usage: Usage
    latency_ms: float
    finish_reason: str | None = None


class ImageSize(BaseModel):
    width: int
    height: int


class PageResult(BaseModel):
    page: int = Field(description="The page's number in the PDF, from 1.")
    result: Any = None
    text: str | None = None
    image: ImageSize | None = Field(None, description="The page image's size: boxes and points are in its pixels.")
    usage: Usage = Field(default_factory=Usage)
    error: dict[str, Any] | None = Field(None, description="Why the page failed (OpenAI's error object).")


class AnalyzeResponse(BaseModel):
    task: str
    result: Any = Field(description="The task's structured result; boxes and points in the image's pixels.")
    text: str = Field(description="The model's raw answer (without a Thinking model's reasoning).")
    reasoning: str | None = Field(None, description="A Thinking model's reasoning, when it sent one.")
    model: str
    usage: Usage
    latency_ms: float
    image: ImageSize = Field(description="The (first) image's size, upright, as the user sent it (a PDF: its "
                             "first page's, as rendered).")
    images: list[ImageSize] | None = None
    pages: list[PageResult] | None = Field(None, description="A PDF's pages, in order, each with its own result.")
    pages_failed: int | None = Field(None, description="How many of a PDF's pages failed, after one retry.")
