"""Configuration: one YAML file, validated once, immutable.

Where it comes from, by precedence: ``--config FILE``, ``$CHATLANE_CONFIG``,
``config/config.yaml`` (none of them: the defaults). Any key can also be set
from the environment as ``CHATLANE__SECTION__KEY`` (for example
``CHATLANE__AGENT__MODEL=openai/gpt-4o``); the value is read by the key's type
(``bot.envconfig``): text stays text, lists and sections are JSON, so
``CHATLANE__AGENT__FALLBACK_MODELS='["a/b", "c/d"]'`` works. Secrets never sit
in the file: it names environment variables (``*_env``).

A bad file or value raises ``ConfigError`` with one message naming the key,
the problem and the fix.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.providers.registry import provider_kinds

ENV_PREFIX = "CHATLANE__"
DEFAULT_PATH = Path("config/config.yaml")

_STRATEGY_ALIASES = {
    "recent": "recent",
    "keep_recent": "recent",
    "important": "important",
    "keep_important": "important",
    "summarize": "summarize",
}


class ConfigError(Exception):
    """A config problem, phrased for the person who wrote the file."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthProfileConfig(_Model):
    id: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    api_key_env: str = Field(min_length=1)


class ContextConfig(_Model):
    max_tokens: int = Field(default=180_000, gt=0)
    compaction_strategy: Literal["recent", "important", "summarize"] = "summarize"
    compaction_threshold: float = Field(default=0.8, gt=0, le=1)
    reserve_tokens: int = Field(default=4096, ge=0)

    @field_validator("compaction_strategy", mode="before")
    @classmethod
    def _alias(cls, value: Any) -> Any:
        if isinstance(value, str):
            key = value.strip().lower()
            if key in _STRATEGY_ALIASES:
                return _STRATEGY_ALIASES[key]
            raise ValueError(
                f"unknown strategy {value!r}; use one of: recent, keep_important "
                "(or important), summarize"
            )
        return value


QueueModeName = Literal["collect", "followup", "interrupt"]


class QueuingConfig(_Model):
    enabled: bool = True
    max_concurrent_per_session: int = Field(default=1, ge=1)
    max_concurrent_global: int = Field(default=10, ge=1)
    mode: QueueModeName = "collect"
    max_pending: int = Field(default=20, ge=1)
    turn_timeout: float = Field(default=300.0, gt=0)
    # Messages waiting for a turn in one process beyond which new ones get a busy
    # notice (still answered in order); 0: never.
    max_backlog: int = Field(default=200, ge=0)


class CooldownConfig(_Model):
    backoff_seconds: tuple[float, ...] = (60.0, 300.0, 1500.0)
    max_seconds: float = Field(default=3600.0, gt=0)
    billing_seconds: float = Field(default=5 * 3600.0, gt=0)
    billing_max_seconds: float = Field(default=24 * 3600.0, gt=0)


class MediaConfig(_Model):
    """``agent.media``: photos, voice notes and files sent to the bot (docs/media.md)."""

    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)  # larger files are refused
    transcription_model: str = "gpt-4o-mini-transcribe"  # voice and audio, via openai
    fetch_timeout: float = Field(default=30.0, gt=0)  # seconds a download may stall


class AgentConfig(_Model):
    model: str | None = None
    system_prompt: str = (
        "You are a helpful assistant that chats with people over messaging apps. "
        "Answer clearly and concisely."
    )
    system_prompt_file: Path | None = None  # read at start; wins over system_prompt
    thinking_mode: Literal["off", "on", "stream"] = "off"
    thinking_budget: int = Field(default=2048, ge=1024)
    fallback_models: tuple[str, ...] = ()
    allowed_models: tuple[str, ...] = ()  # what /model may pick besides model and fallbacks
    auth_profiles: tuple[AuthProfileConfig, ...] = ()
    sticky_profiles: bool = False
    cooldown: CooldownConfig = CooldownConfig()
    context: ContextConfig = ContextConfig()
    queuing: QueuingConfig = QueuingConfig()
    tool_format: Literal["markdown", "plain"] | None = None
    show_tool_results: Literal["off", "summary", "full"] = "summary"
    workspace: Path = Path("./workspace")
    max_tool_rounds: int = Field(default=8, ge=1)
    max_output_tokens: int = Field(default=4096, ge=1)
    request_timeout: float = Field(default=120.0, gt=0)
    media: MediaConfig = MediaConfig()

    @field_validator("system_prompt_file", mode="after")
    @classmethod
    def _prompt_file(cls, value: Path | None) -> Path | None:
        return _readable_file(value)

    @field_validator("thinking_mode", "tool_format", "show_tool_results", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare off/on as a boolean.
        if value is False:
            return "off"
        if value is True:
            return "on"
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("model", "fallback_models", "allowed_models", mode="after")
    @classmethod
    def _model_refs(cls, value: Any) -> Any:
        refs = [value] if isinstance(value, str) else list(value or ())
        for ref in refs:
            if "/" not in ref or ref.startswith("/") or ref.endswith("/"):
                raise ValueError(
                    f"{ref!r} is not a model reference; write it as provider/model, "
                    "for example anthropic/claude-sonnet-4-6"
                )
        return value


class ProviderConfig(_Model):
    type: str  # an installed provider kind (the ``chatlane.providers`` entry points)
    base_url: str | None = None
    api_key_env: str | None = None
    vision: bool = True  # false: the models take no images (they get a text note)

    @field_validator("type")
    @classmethod
    def _installed_kind(cls, value: str) -> str:
        if value not in provider_kinds():
            raise ValueError(
                f"unknown provider type {value!r}; the installed types are: "
                f"{', '.join(provider_kinds())} (a third-party type needs its package installed)"
            )
        return value


class ChannelConfig(_Model):
    """``channels.<name>``: the keys every channel has. A channel with keys of its own
    declares a subclass as its ``config_model``; its section is validated by that."""

    enabled: bool = True
    allow_from: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()  # who may use /new, /model and /think in group chats
    rate_limit_per_minute: int = Field(default=30, ge=0)
    tool_format: Literal["markdown", "plain"] | None = None
    queue_mode: QueueModeName | None = None
    show_reasoning: bool | None = None
    mode: Literal["webhook", "polling"] | None = None
    busy_notice: bool | None = None  # None: in group chats only
    # This channel's own system prompt (text or a file), instead of agent.system_prompt.
    system_prompt: str | None = None
    system_prompt_file: Path | None = None
    # Which tools the model may use here: glob patterns (None: every tool).
    allowed_tools: tuple[str, ...] | None = None
    disabled_tools: tuple[str, ...] = ()
    # Show replies while they are written, where the channel can (None: the channel's
    # default); seconds between visible updates (None: the channel's, within its limits).
    streaming: bool | None = None
    stream_every: float | None = Field(default=None, gt=0)

    @field_validator("system_prompt_file", mode="after")
    @classmethod
    def _prompt_file(cls, value: Path | None) -> Path | None:
        return _readable_file(value)

    @model_validator(mode="after")
    def _one_prompt(self) -> ChannelConfig:
        if self.system_prompt is not None and self.system_prompt_file is not None:
            raise ValueError("give system_prompt or system_prompt_file, not both")
        return self

    @field_validator("allow_from", "admins", mode="before")
    @classmethod
    def _as_strings(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        return value


def _readable_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError(f"file {str(value)!r} not found; give a path to a text file")
    return value


_IMPORT_STRING = r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$"


class ToolEntry(_Model):
    """A ``tools:`` entry written as a mapping, to set the tool's name or timeout."""

    function: str = Field(pattern=_IMPORT_STRING)  # "module:function"
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    timeout: float | None = Field(default=None, gt=0)


class McpServerConfig(_Model):
    """``mcp_servers.<name>``: a command to start (stdio) or a URL (streamable HTTP).
    ``${VAR}`` in ``args``, ``env``, ``url`` and ``headers`` is read from the environment."""

    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=60.0, gt=0)  # seconds a tool call may take
    start_timeout: float = Field(default=10.0, gt=0)  # seconds to connect and list tools
    enabled: bool = True

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (a stdio server) or url (streamable HTTP)")
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError("args, env and cwd are for a command; a url server takes headers")
        if self.command is not None and self.headers:
            raise ValueError("headers are for a url server; a command takes env")
        return self


class ServerConfig(_Model):
    host: str = "0.0.0.0"
    port: int | None = Field(default=None, ge=0, le=65535)
    shutdown_grace: float = Field(default=25.0, ge=0)
    process_inbox: bool = True  # false: only store (workers answer)
    redis_max_connections: int | None = Field(default=None, ge=4)  # None: from the cap


class Config(_Model):
    agent: AgentConfig = AgentConfig()
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    server: ServerConfig = ServerConfig()
    tools: tuple[str | ToolEntry, ...] = ()  # "module:function" (or {function, name, timeout})
    tools_timeout: float | None = Field(default=60.0, gt=0)  # seconds; null: no limit
    mcp_servers: dict[str, McpServerConfig] = Field(default_factory=dict)
    hooks: tuple[str, ...] = ()  # "module" or "module:object"
    source: str | None = None

    @field_validator("tools", "hooks", mode="after")
    @classmethod
    def _import_strings(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        for entry in value:
            if isinstance(entry, str) and not re.match(_IMPORT_STRING, entry):
                raise ValueError(
                    f"{entry!r} is not an import string; write it as 'package.module:function' "
                    "(the module must be importable, on PYTHONPATH or installed)"
                )
        return value

    @field_validator("mcp_servers", mode="after")
    @classmethod
    def _server_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name) or "__" in name:
                raise ValueError(
                    f"server name {name!r}: use letters, digits, '-' and single '_' "
                    "(its tools are named mcp__<server>__<tool>)"
                )
        return value

    @field_validator("providers", mode="after")
    @classmethod
    def _no_shadowing(cls, value: dict[str, ProviderConfig]) -> dict[str, ProviderConfig]:
        for name in value:
            if "/" in name:
                raise ValueError(f"provider name {name!r} may not contain '/'")
        return value

    def channel(self, name: str) -> ChannelConfig:
        """``channels.<name>``, as the channel's own model (its defaults when absent)."""
        found = self.channels.get(name)
        return found if found is not None else _channel_defaults(name)

    def provider_kind(self, name: str) -> str | None:
        if name in self.providers:
            return self.providers[name].type
        return name if name in provider_kinds() else None


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; check the --config path")
        return path
    from_env = os.environ.get("CHATLANE_CONFIG")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(
                f"config file {path} not found (from CHATLANE_CONFIG); fix or unset the variable"
            )
        return path
    return DEFAULT_PATH if DEFAULT_PATH.is_file() else None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    data: Mapping[str, Any] | None = None,
) -> Config:
    """Load, merge environment overrides, and validate. Raises ``ConfigError``."""
    env = os.environ if env is None else env
    source: str | None = None
    raw: dict[str, Any]
    if data is not None:
        raw = dict(data)
    else:
        found = find_config_path(path)
        raw = _read_yaml(found) if found else {}
        source = str(found) if found else None
    origins = _apply_env_overrides(raw, env)
    try:
        channels = _channel_sections(raw.pop("channels", None) or {}, source, origins)
        config = Config.model_validate({**raw, "channels": channels, "source": source})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, origins=origins)) from None
    _check_references(config)
    return config


def channel_model(name: str) -> type[ChannelConfig] | None:
    """The config model of the installed channel ``name``; None when none is installed."""
    from bot.registry import load_entry_points

    found = load_entry_points("chatlane.channels").get(name)
    if found is None:
        return None
    model = getattr(found, "config_model", ChannelConfig)
    return model if isinstance(model, type) and issubclass(model, ChannelConfig) else ChannelConfig


@functools.cache
def _channel_defaults(name: str) -> ChannelConfig:
    return (channel_model(name) or ChannelConfig)()


def _channel_sections(
    raw: Any, source: str | None, origins: Mapping[tuple[str, ...], str] | None = None
) -> dict[str, ChannelConfig]:
    """Each ``channels.<name>`` section validated by its channel's own model."""
    if not isinstance(raw, dict):
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}channels: must be a mapping of channel name to settings")
    sections: dict[str, ChannelConfig] = {}
    for name, section in raw.items():
        model = channel_model(str(name))
        if model is None:
            from bot.registry import load_entry_points

            known = ", ".join(load_entry_points("chatlane.channels"))
            where = f"{source}: " if source else ""
            raise ConfigError(
                f"{where}channels.{name}: unknown channel; the installed channels are: {known}"
            )
        try:
            sections[str(name)] = model.model_validate(section or {})
        except ValidationError as exc:
            raise ConfigError(
                _describe(exc, source, prefix=f"channels.{name}.", origins=origins)
            ) from None
    return sections


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}: not valid YAML{where}; check the indentation and quoting there"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with keys such as 'agent:'")
    return loaded


def _apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """``CHATLANE__SECTION__KEY`` variables merged into ``raw``, each read by its key's type;
    returns which variable set which key path."""
    from bot import envconfig

    def dynamic(path: tuple[str, ...]) -> type[BaseModel] | None:
        if len(path) == 2 and path[0] == "channels":
            return channel_model(path[1]) or ChannelConfig
        return None

    try:
        return envconfig.apply(raw, env, Config, prefix=ENV_PREFIX, model_for=dynamic)
    except envconfig.EnvError as exc:
        raise ConfigError(str(exc)) from None


def _describe(
    exc: ValidationError,
    source: str | None,
    *,
    prefix: str = "",
    origins: Mapping[tuple[str, ...], str] | None = None,
) -> str:
    lines = []
    for error in exc.errors():
        key = (prefix + ".".join(str(part) for part in error["loc"])).rstrip(".") or "(top level)"
        where = f"{source}: " if source else ""
        variable = _variable_for(key, origins)
        if variable:  # set from the environment: name the variable, not the file
            where = f"{variable}: "
        problem = error["msg"]
        if error["type"] == "extra_forbidden":
            problem = "unknown key; remove it or check its spelling (see docs/configuration.md)"
        elif error["type"] == "literal_error":
            problem = f"{problem} (got {error.get('input')!r})"
        elif problem.startswith("Value error, "):
            problem = problem[len("Value error, ") :]
        lines.append(f"{where}{key}: {problem}")
    return "\n".join(lines)


def _variable_for(key: str, origins: Mapping[tuple[str, ...], str] | None) -> str | None:
    """The environment variable that set ``key`` or a section holding it."""
    path = tuple(key.lower().split("."))
    for end in range(len(path), 0, -1):
        found = (origins or {}).get(path[:end])
        if found:
            return found
    return None


def _check_references(config: Config) -> None:
    refs = ([config.agent.model] if config.agent.model else []) + list(config.agent.fallback_models)
    for ref in refs:
        provider = ref.split("/", 1)[0]
        if config.provider_kind(provider) is None:
            raise ConfigError(
                f"agent.model or agent.fallback_models: provider {provider!r} in {ref!r} is not "
                f"known; declare it under 'providers:' (a type and base_url) "
                f"or use one of: {', '.join(provider_kinds())}"
            )
    for index, profile in enumerate(config.agent.auth_profiles):
        if config.provider_kind(profile.provider) is None:
            raise ConfigError(
                f"agent.auth_profiles.{index}.provider: {profile.provider!r} is not a known "
                f"provider; use one of {', '.join(provider_kinds())} or a name declared under "
                "'providers:'"
            )
    ids = [p.id for p in config.agent.auth_profiles]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ConfigError(
            f"agent.auth_profiles: the id {sorted(duplicates)[0]!r} is used twice; give each "
            "profile its own id"
        )


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("CHATLANE_DATA_DIR") or "./data")
