"""The stock OpenAI Python SDK against Monoize, changing only the base URL and the key.

Run by tests/tests/sdk.rs with OPENAI_BASE_URL and OPENAI_API_KEY pointing at a gateway,
and MONOIZE_BROKE_BASE_URL at one whose user has no balance left. Prints `ok <check>` per
check that held; any failure raises, so the exit status is non-zero.
"""

import os

import openai

client = openai.OpenAI(max_retries=0, timeout=20)


def check(name):
    print(f"ok {name}", flush=True)


def chat():
    completion = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "hi", completion
    assert completion.usage.prompt_tokens == 3, completion
    # The SDK's request id is Monoize's (the one its logs name), not the upstream's.
    assert completion._request_id, completion
    assert completion._request_id != "req_upstream_0123456789", completion._request_id
    check("chat")


def streaming_chat():
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "onetwo", chunks
    assert all(c.usage is None for c in chunks), "usage was not asked for"
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage.completion_tokens == 2, chunks
    check("streaming_chat")


def embeddings():
    answer = client.embeddings.create(model="m", input=["a", "b"])
    assert [e.index for e in answer.data] == [0, 1], answer
    assert answer.data[0].embedding == [0.5, -0.25], answer
    check("embeddings")


def models():
    ids = [model.id for model in client.models.list()]
    assert ids == ["m"], ids
    assert client.models.retrieve("m").id == "m"
    try:
        client.models.retrieve("no-such-model")
        raise AssertionError("an unknown model was found")
    except openai.NotFoundError as error:
        assert error.code == "model_not_found", error
    check("models")


def responses():
    response = client.responses.create(model="m", input="hi")
    assert response.output_text == "hi", response
    follow_up = client.responses.create(
        model="m", input="and then?", previous_response_id=response.id
    )
    assert follow_up.output_text == "hi", follow_up
    # The stored response, from the channel that holds it.
    assert client.responses.retrieve(response.id).id == response.id
    assert client.responses.input_items.list(response.id).data == []
    client.responses.delete(response.id)
    events = [event.type for event in client.responses.create(model="m", input="hi", stream=True)]
    assert events[-1] == "response.completed", events
    check("responses")


def errors():
    wrong = openai.OpenAI(api_key="sk-wrong-000000000000", max_retries=0, timeout=20)
    try:
        wrong.chat.completions.create(model="m", messages=[])
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError as error:
        assert error.status_code == 401
        assert error.code == "unauthorized", error.body
    try:
        client.chat.completions.create(model="nope", messages=[])
        raise AssertionError("an unknown model was served")
    except openai.NotFoundError as error:
        assert error.code == "model_not_found", error.body
    broke = openai.OpenAI(
        base_url=os.environ["MONOIZE_BROKE_BASE_URL"], max_retries=0, timeout=20
    )
    try:
        broke.chat.completions.create(model="m", messages=[])
        raise AssertionError("a broke user was served")
    except openai.APIStatusError as error:
        assert error.status_code == 402, error
        assert error.code == "insufficient_balance", error.body
        assert error.type == "insufficient_balance", error.body
    check("errors")


chat()
streaming_chat()
embeddings()
models()
responses()
errors()
