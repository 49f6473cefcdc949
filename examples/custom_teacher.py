"""Plug in your own teacher: a custom hindsight template.

The teacher is the model itself, shown the feedback in hindsight. How the
feedback is shown is a format string with the fields ``{content}`` (the user's
message) and ``{feedback}``. Set it once in the settings (here in code; or
``CLAAS_TEACHER_TEMPLATE`` / ``teacher_template`` in the TOML file) and every
update uses it: Python API, server, CLI and eval harness alike.

Which model plays the teacher is a per-update choice: ``config={"teacher": ...}``
with ``base`` (the frozen base model, default), ``current`` (the adapter itself)
or ``remote`` (logprobs from the serving backend, e.g. vLLM).

Data goes to ``$CLAAS_DATA_DIR`` (default ``~/.claas``).
"""

from claas import Learner, Settings
from claas.teacher import teacher_messages
from claas.types import messages_from_dicts

TEMPLATE = (
    "{content}\n\n"
    "(Note: you answered this before, and the user replied: {feedback} "
    "Answer again, taking the reply into account.)"
)
ADAPTER = "examples/teacher"
QUESTION = [{"role": "user", "content": "Name a planet of the solar system."}]
FEEDBACK = "Name the largest one, in a single word."

# What the teacher will see: the last user turn rewritten by the template.
for message in teacher_messages(messages_from_dicts(QUESTION), FEEDBACK, template=TEMPLATE):
    print(f"teacher sees ({message.role}): {message.content}\n")

settings = Settings.load(teacher_template=TEMPLATE)  # plus CLAAS_* from the environment
with Learner(settings) as learner:
    learner.init_adapter(ADAPTER, exist_ok=True)
    answer = learner.chat(ADAPTER, QUESTION, max_tokens=24, temperature=0)
    print(f"[v{answer.adapter_version}] {answer.text}")

    result = learner.feedback(answer.id, FEEDBACK, config={"teacher": "base"})
    loss = result.metrics["distill_loss"]
    print(f"feedback -> version {result.version}, distill loss {loss:.4f}")

    again = learner.chat(ADAPTER, QUESTION, max_tokens=24, temperature=0)
    print(f"[v{again.adapter_version}] {again.text}")
