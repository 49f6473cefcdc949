"""`claas adapters ...` and the root options, on the fakes."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from claas import Learner

Run = Callable[..., Any]


def _learn(cli_json: Run, adapter: str, times: int = 1) -> None:
    """Give ``times`` feedback updates to ``adapter`` through the CLI."""
    for _ in range(times):
        answer = cli_json("chat", adapter, "-m", "hello")
        cli_json("feedback", answer["id"], "shorter please")


def test_init_ls_versions_rollback_export_rm(
    cli: Run, cli_json: Run, observer: Learner, tmp_path: Path
) -> None:
    created = cli_json("adapters", "init", "team/bot", "--rank", "8")
    assert (created["adapter_id"], created["version"], created["live"]) == ("team/bot", 0, True)
    assert observer.current_version("team/bot").lora["rank"] == 8

    _learn(cli_json, "team/bot", times=2)
    listed = cli_json("adapters", "ls")
    assert [(a["adapter_id"], a["live_version"], a["versions"]) for a in listed] == [
        ("team/bot", 2, 3)
    ]
    versions = cli_json("adapters", "versions", "team/bot")
    assert [(v["version"], v["parent"], v["live"]) for v in versions] == [
        (0, None, False),
        (1, 0, False),
        (2, 1, True),
    ]

    back = cli_json("adapters", "rollback", "team/bot", "1")
    assert (back["version"], back["live"]) == (1, True)
    assert observer.current_version("team/bot").version == 1

    exported = cli_json("adapters", "export", "team/bot", "--version", "2", "--out", str(tmp_path))
    archive = Path(exported["path"])
    assert archive.parent == tmp_path and archive.name.endswith("v2.zip")
    with zipfile.ZipFile(archive) as zipped:
        assert "fake_weights.json" in zipped.namelist()

    removed = cli_json("adapters", "rm", "team/bot", "--yes")
    assert removed == {"adapter_id": "team/bot", "deleted_versions": 3}
    assert observer.adapters() == []
    assert cli_json("adapters", "ls") == []


def test_human_output_names_versions(cli: Run, cli_json: Run) -> None:
    assert "no adapters yet" in cli("adapters", "ls").stdout
    init = cli("adapters", "init", "team/bot")
    assert init.exit_code == 0
    assert "team/bot v0" in init.stdout
    _learn(cli_json, "team/bot")
    table = cli("adapters", "versions", "team/bot").stdout
    assert "* v1" in table and "  v0" in table
    assert "team/bot" in cli("adapters", "ls").stdout
    assert "now serves v0" in cli("adapters", "rollback", "team/bot", "0").stdout


def test_ls_filters_by_namespace(cli_json: Run) -> None:
    for adapter in ("a/one", "b/two", "a/three"):
        cli_json("adapters", "init", adapter)
    assert [a["adapter_id"] for a in cli_json("adapters", "ls", "a")] == ["a/one", "a/three"]


def test_errors_exit_1_with_message_and_change_nothing(cli: Run, observer: Learner) -> None:
    assert cli("adapters", "init", "team/bot").exit_code == 0

    again = cli("adapters", "init", "team/bot")
    assert again.exit_code == 1
    assert again.stderr.strip() == "error: AdapterExists: adapter 'team/bot' already exists"
    assert "Traceback" not in again.output

    assert cli("adapters", "init", "team/bot", "--exist-ok").exit_code == 0

    bad_id = cli("adapters", "init", "no-slash")
    assert bad_id.exit_code == 1
    assert bad_id.stderr.startswith("error: InvalidAdapterId:")

    missing = cli("adapters", "rollback", "team/bot", "7")
    assert missing.exit_code == 1
    assert "VersionNotFound" in missing.stderr
    assert observer.current_version("team/bot").version == 0

    bad_lora = cli("adapters", "init", "team/other", "--dropout", "2")
    assert bad_lora.exit_code == 1
    assert "InvalidConfig" in bad_lora.stderr
    assert observer.adapters() == ["team/bot"]

    gone = cli("adapters", "rm", "team/none", "--yes")
    assert gone.exit_code == 1
    assert "AdapterNotFound" in gone.stderr


def test_errors_in_json_mode_are_json_on_stderr(cli: Run) -> None:
    result = cli("adapters", "versions", "team/none", "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert json.loads(result.stderr) == {
        "error": {"type": "AdapterNotFound", "message": "adapter 'team/none' does not exist"}
    }


@pytest.mark.parametrize(
    "args",
    [
        ["adapters", "rollback", "team/bot", "-1"],
        ["adapters", "rollback", "team/bot", "one"],
        ["adapters", "init"],
        ["adapters", "init", "team/bot", "--rank", "0"],
        ["adapters", "frobnicate"],
        ["--no-such-option", "adapters", "ls"],
    ],
)
def test_usage_errors_exit_2(cli: Run, args: list[str], observer: Learner) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert observer.adapters() == []


def test_rm_asks_first(cli: Run, observer: Learner) -> None:
    cli("adapters", "init", "team/bot")
    declined = cli("adapters", "rm", "team/bot", input="n\n")
    assert declined.exit_code == 1
    assert "Delete team/bot and its 1 version(s)?" in declined.output
    assert observer.adapters() == ["team/bot"]

    accepted = cli("adapters", "rm", "team/bot", input="y\n")
    assert accepted.exit_code == 0
    assert "deleted team/bot" in accepted.stdout
    assert observer.adapters() == []


def test_export_to_a_file_path(cli_json: Run, tmp_path: Path) -> None:
    cli_json("adapters", "init", "team/bot")
    target = tmp_path / "out" / "bot.zip"
    exported = cli_json("adapters", "export", "team/bot", "-o", str(target))
    assert exported["path"] == str(target)
    assert zipfile.is_zipfile(target)


def test_data_dir_option_and_config_file(cli: Run, tmp_path: Path) -> None:
    # The flag beats the environment, which beats the config file.
    flagged = tmp_path / "flagged"
    result = cli("--data-dir", str(flagged), "adapters", "init", "team/bot")
    assert result.exit_code == 0, result.output
    assert (flagged / "adapters" / "team" / "bot").is_dir()

    from_file = tmp_path / "from-file"
    config = tmp_path / "claas.toml"
    config.write_text(
        f'[claas]\ndata_dir = "{from_file}"\ninference_backend = "fake"\ntraining_engine = "fake"\n'
    )
    result = cli(
        "--config", str(config), "adapters", "init", "team/toml", env={"CLAAS_DATA_DIR": None}
    )
    assert result.exit_code == 0, result.output
    assert (from_file / "adapters" / "team" / "toml").is_dir()

    broken = tmp_path / "broken.toml"
    broken.write_text("data_dir = [")
    result = cli("--config", str(broken), "adapters", "ls")
    assert result.exit_code == 1
    assert "InvalidConfig" in result.stderr and "broken.toml" in result.stderr


def test_base_model_option_reaches_settings(cli: Run, data_dir: Path) -> None:
    result = cli("--base-model", "   ", "adapters", "ls")
    assert result.exit_code == 1
    assert "base_model" in result.stderr
    assert not data_dir.exists()


def test_learn_from_followups_init_configure_and_list(
    cli: Run, cli_json: Run, observer: Learner
) -> None:
    cli_json("adapters", "init", "team/fu", "--learn-from-followups")
    assert observer.adapter_settings("team/fu").learn_from_followups is True
    off = cli_json("adapters", "configure", "team/fu", "--no-learn-from-followups")
    assert off == {"adapter_id": "team/fu", "learn_from_followups": False}
    assert cli_json("adapters", "configure", "team/fu")["learn_from_followups"] is False
    question = [{"role": "user", "content": "hi"}]
    answer = observer.chat("team/fu", question)
    turns = [{"role": "assistant", "content": answer.text}, {"role": "user", "content": "Shorter."}]
    observer.chat("team/fu", [*question, *turns])
    (link,) = cli_json("adapters", "followups", "team/fu")
    assert (link["completion_id"], link["text"], link["job_id"]) == (answer.id, "Shorter.", None)
    human = cli("adapters", "followups", "team/fu")
    assert human.exit_code == 0 and "Shorter." in human.output
