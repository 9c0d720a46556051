"""Config loading: precedence, the plan's keys, env overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_config

PLAN_EXAMPLE = """
agent:
  model: anthropic/claude-opus-4-5
  thinking_mode: stream
  fallback_models:
    - anthropic/claude-sonnet-4
    - openai/gpt-4
  auth_profiles:
    - id: anthropic-main
      provider: anthropic
      api_key_env: ANTHROPIC_API_KEY
    - id: anthropic-backup
      provider: anthropic
      api_key_env: ANTHROPIC_API_KEY_2
  context:
    max_tokens: 180000
    compaction_strategy: keep_important
    compaction_threshold: 0.8
  queuing:
    enabled: true
    max_concurrent_per_session: 1
    max_concurrent_global: 10
  tool_format: markdown
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_plan_example_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.yaml", PLAN_EXAMPLE))
    agent = config.agent
    assert agent.model == "anthropic/claude-opus-4-5"
    assert agent.thinking_mode == "stream"
    assert agent.fallback_models == ("anthropic/claude-sonnet-4", "openai/gpt-4")
    assert [p.id for p in agent.auth_profiles] == ["anthropic-main", "anthropic-backup"]
    assert agent.context.compaction_strategy == "important"
    assert agent.queuing.max_concurrent_global == 10
    assert agent.tool_format == "markdown"


def test_defaults_without_any_file() -> None:
    config = load_config()
    assert config.source is None
    assert config.agent.thinking_mode == "off"
    assert config.agent.context.compaction_strategy == "summarize"
    assert config.agent.context.compaction_threshold == 0.8
    assert config.agent.queuing.max_concurrent_per_session == 1
    assert config.agent.queuing.max_concurrent_global == 10
    assert config.channel("sms").rate_limit_per_minute == 30


def test_precedence_flag_then_env_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "config/config.yaml", "agent: {model: openai/from-default}\n")
    assert load_config().agent.model == "openai/from-default"
    env_file = write(tmp_path / "env.yaml", "agent: {model: openai/from-env}\n")
    monkeypatch.setenv("CHATLANE_CONFIG", str(env_file))
    assert load_config().agent.model == "openai/from-env"
    flag = write(tmp_path / "flag.yaml", "agent: {model: openai/from-flag}\n")
    assert load_config(flag).agent.model == "openai/from-flag"


def test_yaml_booleans_for_modes(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path / "c.yaml", "agent: {thinking_mode: on, show_tool_results: off}\n")
    )
    assert config.agent.thinking_mode == "on"
    assert config.agent.show_tool_results == "off"


def test_env_overrides_any_key(tmp_path: Path) -> None:
    env = {
        "CHATLANE__AGENT__MODEL": "openai/gpt-4o",
        "CHATLANE__AGENT__FALLBACK_MODELS": "[anthropic/claude-sonnet-4]",
        "CHATLANE__CHANNELS__SMS__RATE_LIMIT_PER_MINUTE": "5",
    }
    config = load_config(env=env)
    assert config.agent.model == "openai/gpt-4o"
    assert config.agent.fallback_models == ("anthropic/claude-sonnet-4",)
    assert config.channel("sms").rate_limit_per_minute == 5


def test_named_provider(tmp_path: Path) -> None:
    text = """
agent: {model: provider-a/model-1}
providers:
  provider-a: {type: openai, base_url: "http://localhost:11434/v1", api_key_env: PROVIDER_A_KEY}
"""
    config = load_config(write(tmp_path / "c.yaml", text))
    assert config.provider_kind("provider-a") == "openai"
    assert config.providers["provider-a"].base_url == "http://localhost:11434/v1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("agent: {thinking_mode: loud}\n", "agent.thinking_mode"),
        ("agent: {context: {compaction_threshold: 1.5}}\n", "agent.context.compaction_threshold"),
        ("agent: {context: {compaction_strategy: newest}}\n", "keep_important"),
        ("agent: {modle: x/y}\n", "agent.modle: unknown key"),
        ("agent: {model: claude}\n", "provider/model"),
        ("agent: {model: nowhere/model}\n", "declare it under 'providers:'"),
        ("channels: {icq: {}}\n", "channels.icq: unknown channel"),
        ("agent: [1, 2]\n", "agent"),
        ("agent:\n  model: [unclosed\n", "not valid YAML at line"),
        (
            "agent:\n  auth_profiles:\n    - {id: a, provider: anthropic, api_key_env: K}\n"
            "    - {id: a, provider: anthropic, api_key_env: L}\n",
            "used twice",
        ),
    ],
)
def test_bad_config_names_key_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path / "bad.yaml", text))
    assert expected in str(info.value)
    assert "Traceback" not in str(info.value)


def test_missing_explicit_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_config_is_immutable() -> None:
    config = load_config()
    with pytest.raises(Exception, match="frozen"):
        config.agent.model = "x/y"  # type: ignore[misc]


def test_documented_default_config_is_valid() -> None:
    shipped = Path(__file__).resolve().parent.parent / "config" / "config.yaml"
    config = load_config(shipped)
    assert config.channel("sms").rate_limit_per_minute == 10


# Config from the environment: each value read by its key's type (issue 22's cases).


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[+15550001111]", ("+15550001111",)),  # YAML read this as the number 15550001111
        ('["+15550001111", "+15550002222"]', ("+15550001111", "+15550002222")),
        ("[0012345]", ("0012345",)),  # YAML read this as octal
        ("+15550001111", ("+15550001111",)),
        ("+15550001111, +15550002222", ("+15550001111", "+15550002222")),
        ("[123456789, 42]", ("123456789", "42")),
        ("[]", ()),
    ],
)
def test_env_list_keeps_what_was_written(value: str, expected: tuple[str, ...]) -> None:
    config = load_config(env={"CHATLANE__CHANNELS__SMS__ALLOW_FROM": value})
    assert config.channel("sms").allow_from == expected


@pytest.mark.parametrize(
    "prompt", ["You are Ada. Rules: be brief.", "42", "[draft] be kind", "true", "{not json"]
)
def test_env_text_key_stays_text(prompt: str) -> None:
    config = load_config(env={"CHATLANE__AGENT__SYSTEM_PROMPT": prompt})
    assert config.agent.system_prompt == prompt


def test_env_numbers_booleans_objects_and_json_lists(tmp_path: Path) -> None:
    file = write(tmp_path / "c.yaml", "agent: {queuing: {max_pending: 3}}\n")
    env = {
        "CHATLANE__AGENT__QUEUING__MAX_PENDING": "7",  # the environment wins over the file
        "CHATLANE__AGENT__CONTEXT__COMPACTION_THRESHOLD": "0.5",
        "CHATLANE__SERVER__PROCESS_INBOX": "false",
        "CHATLANE__PROVIDERS": '{"local": {"type": "openai", "base_url": "http://h/v1"}}',
        "CHATLANE__AGENT__MODEL": "local/llama",
        "CHATLANE__AGENT__FALLBACK_MODELS": '["anthropic/claude-sonnet-4", "openai/gpt-4o"]',
        "CHATLANE__AGENT__AUTH_PROFILES": (
            '[{"id": "main", "provider": "openai", "api_key_env": "KEY_ONE"}]'
        ),
    }
    config = load_config(file, env=env)
    assert config.agent.queuing.max_pending == 7
    assert config.agent.context.compaction_threshold == 0.5
    assert config.server.process_inbox is False
    assert config.providers["local"].base_url == "http://h/v1"
    assert config.agent.model == "local/llama"
    assert config.agent.fallback_models == ("anthropic/claude-sonnet-4", "openai/gpt-4o")
    assert config.agent.auth_profiles[0].api_key_env == "KEY_ONE"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CHATLANE__AGENT__QUEUING__MAX_PENDING": "lots"}, "valid integer"),
        ({"CHATLANE__AGENT__MODLE": "a/b"}, "unknown key"),
        ({"CHATLANE__CHANNELS__SMS__RATE_LIMIT_PER_MINUTE": "-1"}, "greater than or equal"),
        ({"CHATLANE__CHANNELS__SMS": '{"allow": ["x"]}'}, "unknown key"),
        ({"CHATLANE__PROVIDERS": "[1]"}, "JSON object"),
        ({"CHATLANE__CHANNELS__SMS__ALLOW_FROM": "[+1555"}, "must end with ']'"),
        ({"CHATLANE__AGENT__AUTH_PROFILES": "[{id: main}]"}, "not valid JSON"),
    ],
)
def test_env_error_names_the_variable(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    file = write(tmp_path / "c.yaml", "agent: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(file, env=env)
    message = str(info.value)
    (variable,) = env
    assert message.startswith(f"{variable}: "), message
    assert expected in message
    assert str(file) not in message  # the file is fine: the variable is named, not the file
