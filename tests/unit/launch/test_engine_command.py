"""The LMDeploy command `vlserve launch` runs, built from settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vlserve.config import Settings, SettingsError
from vlserve.launch.engine_command import LmdeployHelp, accepted_flags, engine_command, engine_env, lmdeploy_args

ALL = LmdeployHelp(frozenset({
    "--backend", "--tp", "--server-name", "--server-port", "--session-len", "--distributed-executor-backend",
    "--model-name", "--log-level", "--disable-metrics", "--cache-max-entry-count", "--max-batch-size"}))
HELP = Path(__file__).parents[2] / "fixtures" / "lmdeploy-help"


def settings(**overrides) -> Settings:
    return Settings(MODEL_PATH="/models/Qwen3-VL-32B-Instruct", **overrides)


def test_the_origin_designs_command():
    args = lmdeploy_args(settings(TENSOR_PARALLEL_SIZE=4, MAX_MODEL_LEN=16384), ALL)
    assert args == ["/models/Qwen3-VL-32B-Instruct", "--backend", "pytorch", "--tp", "4",
                    "--server-name", "127.0.0.1", "--server-port", "23333", "--session-len", "16384",
                    "--distributed-executor-backend", "mp", "--model-name", "Qwen3-VL-32B-Instruct",
                    "--log-level", "INFO", "--disable-metrics"]


def test_tuning_knobs_metrics_and_extra_args():
    args = lmdeploy_args(settings(LMDEPLOY_CACHE_MAX_ENTRY_COUNT=0.5, LMDEPLOY_MAX_BATCH_SIZE=16,
                                  LMDEPLOY_METRICS=True, SERVED_MODEL_NAME="qwen3-vl",
                                  LMDEPLOY_EXTRA_ARGS="--max-prefill-token-num 4096 --enable-prefix-caching"), ALL)
    assert args[args.index("--cache-max-entry-count") + 1] == "0.5"
    assert args[args.index("--max-batch-size") + 1] == "16"
    assert args[args.index("--model-name") + 1] == "qwen3-vl"
    assert "--disable-metrics" not in args
    assert args[-3:] == ["--max-prefill-token-num", "4096", "--enable-prefix-caching"]


def test_flags_the_installed_lmdeploy_lacks_are_left_out():
    older = LmdeployHelp(ALL.flags - {"--distributed-executor-backend", "--disable-metrics"})
    args = lmdeploy_args(settings(), older)
    assert "--distributed-executor-backend" not in args and "--disable-metrics" not in args
    assert "--tp" in args


def test_flags_are_read_from_help(tmp_path):
    fake = tmp_path / "fake_lmdeploy.py"
    fake.write_text("print('usage: lmdeploy serve api_server [-h] [--server-port SERVER_PORT] [--tp TP]')\n")
    assert accepted_flags([sys.executable, str(fake)]).flags == {"--server-port", "--tp"}
    broken = tmp_path / "broken.py"
    broken.write_text("import sys; sys.stderr.write('No module named lmdeploy\\n'); sys.exit(1)\n")
    with pytest.raises(SettingsError, match="No module named lmdeploy"):
        accepted_flags([sys.executable, str(broken)])


def test_model_path_is_required_and_engine_command_overrides():
    with pytest.raises(SettingsError, match="MODEL_PATH"):
        lmdeploy_args(Settings(), ALL)
    assert engine_command(Settings(ENGINE_COMMAND="my-engine --port '2 3'")) == ["my-engine", "--port", "2 3"]


def test_environment_of_the_origin_design():
    env = engine_env(settings())
    assert env["LMDEPLOY_SKIP_WARMUP"] == "true" and env["LMDEPLOY_ENABLE_CHECK_ENV"] == "false"


# --- tool-call and reasoning parsers, against the real --help of two LMDeploy versions ---

@pytest.mark.contract
@pytest.mark.parametrize("version", ["0.11.1", "0.18.0"])
def test_qwens_tool_call_parser_is_passed_when_lmdeploy_lists_it(version):
    help_ = LmdeployHelp.parse((HELP / f"api_server-{version}.txt").read_text())
    assert {"--tool-call-parser", "--reasoning-parser", "--session-len"} <= help_.flags
    args = lmdeploy_args(settings(), help_)
    assert args[args.index("--tool-call-parser") + 1] == "qwen3"
    assert "--reasoning-parser" not in args  # an Instruct checkpoint writes no <think>


@pytest.mark.contract
@pytest.mark.parametrize("version", ["0.11.1", "0.18.0"])
def test_a_thinking_checkpoint_also_gets_the_reasoning_parser(version):
    help_ = LmdeployHelp.parse((HELP / f"api_server-{version}.txt").read_text())
    args = lmdeploy_args(Settings(MODEL_PATH="/models/Qwen3-VL-32B-Thinking"), help_)
    assert args[args.index("--reasoning-parser") + 1] == "qwen-qwq"  # 0.18 still accepts it as a legacy name
    assert "qwen-qwq" in help_.names["--reasoning-parser"] and "qwen3" in help_.names["--tool-call-parser"]


@pytest.mark.contract
def test_parsers_can_be_chosen_or_turned_off_and_a_wrong_name_stops_the_start():
    help_ = LmdeployHelp.parse((HELP / "api_server-0.18.0.txt").read_text())
    off = lmdeploy_args(settings(LMDEPLOY_TOOL_CALL_PARSER="off"), help_)
    assert "--tool-call-parser" not in off
    chosen = lmdeploy_args(settings(LMDEPLOY_REASONING_PARSER="deepseek-v3"), help_)
    assert chosen[chosen.index("--reasoning-parser") + 1] == "deepseek-v3"
    with pytest.raises(SettingsError, match="LMDEPLOY_TOOL_CALL_PARSER='hermes'"):
        lmdeploy_args(settings(LMDEPLOY_TOOL_CALL_PARSER="hermes"), help_)


def test_an_lmdeploy_without_parser_flags_gets_none():
    assert "--tool-call-parser" not in lmdeploy_args(settings(), ALL)
