"""The stock Anthropic Python SDK against Monoize, changing only the base URL and the key.

Run by tests/tests/sdk.rs with ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY pointing at a
gateway (the SDK sends the key as `x-api-key`), and MONOIZE_BROKE_BASE_URL at one whose user
has no balance left. Prints `ok <check>` per check that held; any failure raises, so the exit
status is non-zero.
"""

import os

import anthropic

client = anthropic.Anthropic(max_retries=0, timeout=20)
MESSAGES = [{"role": "user", "content": "hi"}]
# The id the mock upstream gives every request (tests/src/mock_upstream.rs).
UPSTREAM_REQUEST_ID = "req_upstream_0123456789"


def check(name):
    print(f"ok {name}", flush=True)


def messages():
    raw = client.messages.with_raw_response.create(model="m", max_tokens=16, messages=MESSAGES)
    message = raw.parse()
    # The SDK's request id is Monoize's (the one its logs name), not the upstream's.
    assert message._request_id == raw.headers["x-request-id"], message._request_id
    assert message._request_id != UPSTREAM_REQUEST_ID, message._request_id
    assert message.content[0].text == "hi", message
    assert message.usage.output_tokens == 2, message
    assert message.stop_reason == "end_turn", message
    check("messages")


def streaming_messages():
    with client.messages.stream(model="m", max_tokens=16, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "hi", text
    assert final.usage.output_tokens == 2, final
    events = [
        event.type
        for event in client.messages.create(
            model="m", max_tokens=16, messages=MESSAGES, stream=True
        )
    ]
    assert events[0] == "message_start" and events[-1] == "message_stop", events
    check("streaming_messages")


def count_tokens():
    # As Claude Code counts its context: the SDK's beta and stable calls.
    counted = client.messages.count_tokens(model="m", messages=MESSAGES)
    assert counted.input_tokens == 42, counted
    counted = client.beta.messages.count_tokens(model="m", messages=MESSAGES)
    assert counted.input_tokens == 42, counted
    check("count_tokens")


def models():
    ids = [model.id for model in client.models.list()]
    assert ids == ["m"], ids
    model = client.models.retrieve("m")
    assert (model.id, model.type, model.display_name) == ("m", "model", "m"), model
    try:
        client.models.retrieve("nope")
        raise AssertionError("an unknown model was listed")
    except anthropic.NotFoundError as error:
        assert error.body["type"] == "error", error.body
        assert error.body["error"]["type"] == "not_found_error", error.body
        assert error.request_id == error.response.headers["x-request-id"], error.request_id
    check("models")


def errors():
    wrong = anthropic.Anthropic(api_key="sk-wrong-000000000000", max_retries=0, timeout=20)
    try:
        wrong.messages.create(model="m", max_tokens=16, messages=MESSAGES)
        raise AssertionError("a wrong key was accepted")
    except anthropic.AuthenticationError as error:
        assert error.status_code == 401
        assert error.request_id == error.response.headers["x-request-id"], error.request_id
        assert error.body["error"]["type"] == "authentication_error", error.body
    try:
        client.messages.create(model="nope", max_tokens=16, messages=MESSAGES)
        raise AssertionError("an unknown model was served")
    except anthropic.NotFoundError as error:
        assert error.body["error"]["type"] == "not_found_error", error.body
    broke = anthropic.Anthropic(
        base_url=os.environ["MONOIZE_BROKE_BASE_URL"], max_retries=0, timeout=20
    )
    try:
        broke.messages.create(model="m", max_tokens=16, messages=MESSAGES)
        raise AssertionError("a broke user was served")
    except anthropic.APIStatusError as error:
        assert error.status_code == 402, error
        assert error.body["type"] == "error", error.body
        assert error.body["error"]["type"] == "billing_error", error.body
    check("errors")


messages()
streaming_messages()
count_tokens()
models()
errors()
