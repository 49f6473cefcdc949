"""Run the eval harness on a tiny budget: does feedback move the model?

Teaches the ``concise`` preference ("Way too long. Answer in one short
sentence.") to a fresh adapter with one feedback step and measures the held-out
answers before and after it: compliance with the preference's verifier,
answer length and the logprob margin of preferred over dispreferred answers.
The same overrides work on the command line:
``python -m claas.eval preference=concise steps=1`` or ``claas eval ...``.

A real run uses more steps (the packaged default is 16) and longer answers.
The run's records, ``summary.json`` and plots go to ``$CLAAS_DATA_DIR/eval/<run name>``.
"""

from typing import Any

from claas.eval import main


def show(event: str, data: dict[str, Any]) -> None:
    """Print one line per measured step (``baseline`` is step 0)."""
    if event in ("baseline", "step"):
        print(f"step {data['step']}: compliance {data['metrics']['compliance']:.2f}", flush=True)


result = main(
    [
        "preference=concise",
        "steps=1",
        "run_name=example",
        "fresh=true",  # start over instead of resuming an earlier run of this name
        "metrics=[margin]",  # skip the slower capability and collapse probes
        "sampling.max_tokens=40",
        "measure.max_tokens=40",
        "plots=false",
    ],
    progress=show,
)

concise = result.summary["preferences"]["concise"]
for label in ("baseline", "final"):
    numbers = concise[label]
    print(
        f"{label:>8}: compliance {numbers['compliance']:.2f}, "
        f"{numbers['mean_tokens']:.1f} tokens per answer, margin {numbers['margin']:+.2f}"
    )
print(f"adapter {concise['adapter_id']}@{concise['final_version']}; files in {result.output_dir}")
