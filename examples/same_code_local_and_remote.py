"""The same function on the model in this process and on a CLaaS server over HTTP.

``claas.Learner`` and ``claas.Client`` are both a ``claas.LearnerLike``: the same
calls, the same records back, the same exceptions. This script runs ``teach``
on a Learner, then serves that Learner on loopback (uvicorn in a thread, as
``claas serve`` would) and runs ``teach`` again through a Client.

Runs on the bundled CPU model; needs claas-server and httpx
(``pip install 'claas[client]' claas-server``).
"""

import socket
import threading
import time

import uvicorn

from claas import Client, Learner, LearnerLike
from claas_server import create_app

QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


# --8<-- [start:teach]
def teach(claas: LearnerLike, adapter: str) -> None:
    """Chat, learn from one piece of feedback, chat again."""
    claas.init_adapter(adapter, exist_ok=True)
    before = claas.chat(adapter, QUESTION, max_tokens=32, temperature=0)
    update = claas.feedback(before.id, "Answer in one short sentence.", config={"top_k": 20})
    after = claas.chat(adapter, QUESTION, max_tokens=32, temperature=0)
    print(f"{type(claas).__name__}: v{before.adapter_version} -> v{update.version}")
    print(f"  before: {before.text!r}\n  after:  {after.text!r}")


# --8<-- [end:teach]


with Learner() as learner:  # settings from CLAAS_* variables; bundled SmolLM2 by default
    teach(learner, "examples/local")

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # a free loopback port
    server = uvicorn.Server(uvicorn.Config(create_app(learner=learner), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with Client(f"http://127.0.0.1:{sock.getsockname()[1]}") as client:
            teach(client, "examples/remote")
    finally:
        server.should_exit = True
        thread.join()
