"""The official `openai` Python client, unchanged, against Quantlab's /v1 API.

Usage: python tests/openai_client.py http://127.0.0.1:3999/v1
"""
import json
import math
import sys

import jsonschema
import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="not-needed", max_retries=0, timeout=120)
MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

ids = [m.id for m in client.models.list()]
assert MODEL in ids, ids

reply = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, max_tokens=40)
text = reply.choices[0].message.content
assert "Paris" in text, text
assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0, reply.usage
assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
assert reply.choices[0].finish_reason in ("stop", "length")

stream = client.chat.completions.create(
    model=MODEL, messages=QUESTION, temperature=0, max_tokens=40, stream=True,
    stream_options={"include_usage": True},
)
pieces, usage = [], None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for choice in chunk.choices:
        pieces.append(choice.delta.content or "")
streamed = "".join(pieces)
assert streamed == text, (streamed, text)
assert usage is not None and usage.completion_tokens == reply.usage.completion_tokens, usage

try:
    client.chat.completions.create(model="no-such-model", messages=QUESTION)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert "no-such-model" in str(e), e

try:
    client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=7)
    raise AssertionError("temperature 7 was accepted")
except openai.BadRequestError as e:
    assert "temperature" in str(e), e

# Structured output: the reply must parse and validate against the schema, whatever the seed.
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 24},
        "country": {"type": "string", "minLength": 1, "maxLength": 24},
        "population_millions": {"type": "number"},
        "continent": {"enum": ["Africa", "America", "Asia", "Europe", "Oceania"]},
    },
    "required": ["city", "country", "population_millions", "continent"],
    "additionalProperties": False,
}
for seed in (1, 2, 3):
    structured = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        temperature=0.8, seed=seed, max_tokens=120,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}},
    )
    assert structured.choices[0].finish_reason == "stop", structured
    document = json.loads(structured.choices[0].message.content)
    jsonschema.validate(document, SCHEMA)
assert list(document) == list(SCHEMA["properties"]), document

try:
    client.chat.completions.create(
        model=MODEL, messages=QUESTION,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "^a+$"}}},
    )
    raise AssertionError("an unenforceable schema was accepted")
except openai.BadRequestError as e:
    assert "pattern" in str(e), e

# A plain completion (no chat template) through the legacy endpoint.
completion = client.completions.create(model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=12)
assert completion.choices[0].text, completion
assert completion.usage.prompt_tokens < 10, completion.usage

# Log-probabilities: under greedy decoding the likeliest alternative is the token sampled, and the
# tokens spell the reply.
scored = client.chat.completions.create(
    model=MODEL, messages=QUESTION, temperature=0, max_tokens=16, logprobs=True, top_logprobs=3,
)
entries = scored.choices[0].logprobs.content
assert entries and len(entries) == scored.usage.completion_tokens, scored
for entry in entries:
    assert len(entry.top_logprobs) == 3, entry
    assert entry.top_logprobs[0].token == entry.token, entry
    assert abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-6, entry
    assert entry.logprob <= 0, entry
assert bytes(b for e in entries for b in e.bytes).decode() == scored.choices[0].message.content
try:
    client.chat.completions.create(model=MODEL, messages=QUESTION, logprobs=True, top_logprobs=21)
    raise AssertionError("21 alternatives were accepted")
except openai.BadRequestError as e:
    assert "top_logprobs" in str(e), e

print(f"openai client: 8 passed, 0 failed (reply: {text!r}; structured: {document}; first token p={math.exp(entries[0].logprob):.3f})")
