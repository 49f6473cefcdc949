"""Chat, give text feedback, chat again: one learning loop with the Python API.

The feedback becomes one SDPO update of the adapter, published as a new
immutable version before ``feedback`` returns, so the very next ``chat`` is
answered by it. Every version stays available for a one-call rollback.

Runs on the bundled CPU model; data goes to ``$CLAAS_DATA_DIR`` (default ``~/.claas``).
"""

from claas import Learner

ADAPTER = "examples/concise"
QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]

with Learner() as learner:  # settings from CLAAS_* variables; bundled SmolLM2 by default
    learner.init_adapter(ADAPTER, exist_ok=True)

    before = learner.chat(ADAPTER, QUESTION, max_tokens=48, temperature=0)
    print(f"[v{before.adapter_version}] {before.text}\n")

    # Feedback on the answer, by its id: returns once the new version serves.
    # One step at the default learning rate barely moves a greedy answer; this one does.
    result = learner.feedback(
        before.id,
        "Way too long. Answer in one short sentence.",
        config={"learning_rate": 5e-4},  # DistillConfig fields; 2.5x the default
    )
    print(
        f"feedback -> version {result.version} (parent {result.parent_version}), "
        f"loss {result.metrics['distill_loss']:.4f}, {result.timings['total_seconds']:.1f} s\n"
    )

    after = learner.chat(ADAPTER, QUESTION, max_tokens=48, temperature=0)
    print(f"[v{after.adapter_version}] {after.text}\n")

    for version in learner.versions(ADAPTER):
        print(f"{version.ref:24} parent={version.parent} feedback={list(version.feedback_ids)}")

    # Serve the original version again; later feedback builds on it.
    live = learner.rollback(ADAPTER, 0)
    print(f"\nrolled back: {ADAPTER} now serves version {live.version}")
