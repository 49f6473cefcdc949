"""Use CLaaS through the official ``openai`` client.

Starts the CLaaS server in this process (uvicorn on a free loopback port, in a
thread), then: create an adapter, chat with the ``openai`` client (``model`` is
the adapter id), send feedback on that answer by its ``id`` to
``POST /v1/feedback``, and chat again: the answer now comes from the new
version, as ``system_fingerprint`` shows.

Against a server you started with ``claas serve``, keep only the part after
``with running_server() as base_url`` and set ``base_url`` to it.
Data goes to ``$CLAAS_DATA_DIR`` (default ``~/.claas``).
"""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn
from openai import OpenAI

from claas_server import create_app

ADAPTER = "examples/openai"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@contextlib.contextmanager
def running_server() -> Iterator[str]:
    """Serve the CLaaS app on a free loopback port until the block ends; yield its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


with running_server() as base_url:
    # No API keys are configured on this loopback server, so any key string works.
    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    http = httpx.Client(base_url=base_url, timeout=600)

    http.post("/v1/adapters", json={"adapter_id": ADAPTER, "exist_ok": True}).raise_for_status()

    first = client.chat.completions.create(
        model=ADAPTER, messages=QUESTION, max_tokens=32, temperature=0
    )
    print(f"[{first.system_fingerprint}] {first.choices[0].message.content}")

    reply = http.post(
        "/v1/feedback",
        json={"completion_id": first.id, "feedback": "Answer with the city name only."},
    )
    reply.raise_for_status()
    update = reply.json()
    print(f"feedback -> {update['adapter_id']} version {update['version']}")

    second = client.chat.completions.create(
        model=ADAPTER, messages=QUESTION, max_tokens=32, temperature=0
    )
    print(f"[{second.system_fingerprint}] {second.choices[0].message.content}")
    assert second.system_fingerprint == f"claas-{ADAPTER}@{update['version']}"

    models = [m.id for m in client.models.list()]
    print(f"models: {models}")
    http.close()
