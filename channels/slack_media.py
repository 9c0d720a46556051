"""Files sent to the bot on Slack: what a message's ``files`` become, and how they are fetched.

A message's ``files`` (a mention, a DM, a thread follow-up; ``file_share``
messages included) become ``MediaPart``s taken from the event payload only: the
file's id (``ref``), ``url_private_download`` (or ``url_private``), ``size``,
``mimetype`` and name. An audio clip recorded in Slack (``subtype: slack_audio``)
is a voice note; other ``audio/*`` files are audio. Never a URL from the text.

Fetching (``SlackFiles.fetch``, the sink's ``media_fetch``): ``files.info`` with
the bot token first (the file may have been deleted, or the app may lack the
``files:read`` scope, which Slack otherwise answers with its login page), then
the file's private URL with the bot token as a Bearer header, only on Slack's
own file host (``files.slack.com``, or the origin of ``SLACK_API_BASE_URL``).
The size Slack states is checked against ``agent.media.max_bytes`` before the
download (the core checks the event's ``size``, and counts the bytes during it).
A redirect elsewhere does not carry the token (aiohttp drops ``Authorization``
on a cross-origin redirect).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from bot.config import MediaConfig
from bot.inbound import InboundMessage, MediaPart
from bot.media import MediaError, MediaFetch, too_big

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

FILE_HOST = "https://files.slack.com"
MAX_FILES = 10  # Slack takes at most ten files with a message
UNREADABLE = "I couldn't download that file from Slack."
NO_SCOPE = (
    "I can't open files here yet: the Slack app needs the files:read scope "
    "(add it under OAuth & Permissions and reinstall the app)."
)
DELETED = "That file was deleted from Slack before I could read it."
EXTERNAL = "I can only read files uploaded to Slack, not files linked from elsewhere."
SCOPE_ERRORS = frozenset({"missing_scope", "not_allowed_token_type", "no_permission"})
GONE_ERRORS = frozenset({"file_not_found", "file_deleted"})


def media_parts(event: dict[str, Any]) -> tuple[MediaPart, ...]:
    """A message's files as the event describes them (at most ten; never from the text)."""
    files = event.get("files")
    if not isinstance(files, list):
        return ()
    return tuple(_part(item) for item in files[:MAX_FILES] if isinstance(item, dict))


def _part(item: dict[str, Any]) -> MediaPart:
    mime = _text(item.get("mimetype")).partition(";")[0].strip().lower()
    size = item.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        size = None
    url = "" if _external(item) else _url(item)
    name = _text(item.get("name")) or _text(item.get("title"))
    return MediaPart(_kind(item, mime), mime=mime, size=size, name=name, url=url, ref=_id(item))


def _kind(item: dict[str, Any], mime: str) -> str:
    if item.get("subtype") == "slack_audio":  # a clip recorded in Slack
        return "voice"
    found = next((k for k in ("image", "audio", "video") if mime.startswith(k + "/")), "")
    return found or "document"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _id(item: dict[str, Any]) -> str:
    found = _text(item.get("id"))
    return found if found.isalnum() and len(found) <= 40 else ""


def _url(item: dict[str, Any]) -> str:
    return _text(item.get("url_private_download")) or _text(item.get("url_private"))


def _external(item: dict[str, Any]) -> bool:
    return item.get("is_external") is True or item.get("mode") == "external"


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` ("" when it has none, or a bad port)."""
    try:
        found = urlsplit(url)
        port = found.port
    except ValueError:
        return ""
    if found.scheme not in ("http", "https") or not found.hostname:
        return ""
    default = {"https": 443, "http": 80}[found.scheme]
    return f"{found.scheme}://{found.hostname}" + (f":{port}" if port and port != default else "")


class SlackFiles:
    """Fetches a message's files with the bot token, from Slack's file host only."""

    def __init__(
        self, client: AsyncWebClient, *, api_base: str | None = None, max_bytes: int | None = None
    ) -> None:
        self.client = client
        self.hosts = {FILE_HOST} | ({origin(api_base)} - {""} if api_base else set())
        self.max_bytes = max_bytes or MediaConfig().max_bytes

    async def fetch(self, message: InboundMessage, part: MediaPart) -> MediaFetch:
        """The file's private URL and the bot token, once Slack says the file is there."""
        info = await self._info(part.ref) if part.ref else {}
        if _external(info):
            raise MediaError(EXTERNAL)
        size = info.get("size")
        if isinstance(size, int) and size > self.max_bytes:
            raise too_big(self.max_bytes)
        url = _url(info) or part.url
        if origin(url) not in self.hosts:
            log.warning("slack: refused a file URL off Slack's file host (%s)", origin(url) or "-")
            raise MediaError(UNREADABLE)
        return MediaFetch(url, {"Authorization": f"Bearer {self.client.token}"})

    async def _info(self, ref: str) -> dict[str, Any]:
        """``files.info``'s file; {} when Slack could not say (the event's URL is used)."""
        from slack_sdk.errors import SlackApiError

        try:
            answer = await self.client.files_info(file=ref)
        except SlackApiError as error:
            code = str(error.response.get("error") or "")
            if code in SCOPE_ERRORS:
                log.warning("slack: files.info refused (%s): add the files:read scope", code)
                raise MediaError(NO_SCOPE) from None
            if code in GONE_ERRORS:
                raise MediaError(DELETED) from None
            log.warning("slack: files.info failed (%s); using the event's URL", code or "?")
            return {}
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            kind = type(error).__name__
            log.warning("slack: files.info failed (%s); using the event's URL", kind)
            return {}
        found = answer.get("file")
        return found if isinstance(found, dict) else {}
