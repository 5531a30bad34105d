"""The LMDeploy command `vlserve launch` runs, built from settings."""

from __future__ import annotations

import sys

import pytest

from vlserve.config import Settings, SettingsError
from vlserve.engine_command import accepted_flags, engine_command, engine_env, lmdeploy_args

ALL = {"--backend", "--tp", "--server-name", "--server-port", "--session-len", "--distributed-executor-backend",
       "--model-name", "--log-level", "--disable-metrics", "--cache-max-entry-count", "--max-batch-size"}


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
    older = ALL - {"--distributed-executor-backend", "--disable-metrics"}
    args = lmdeploy_args(settings(), older)
    assert "--distributed-executor-backend" not in args and "--disable-metrics" not in args
    assert "--tp" in args


def test_flags_are_read_from_help(tmp_path):
    fake = tmp_path / "fake_lmdeploy.py"
    fake.write_text("print('usage: lmdeploy serve api_server [-h] [--server-port SERVER_PORT] [--tp TP]')\n")
    assert accepted_flags([sys.executable, str(fake)]) == {"--server-port", "--tp"}
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
