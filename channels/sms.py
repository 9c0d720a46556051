"""SMS over Twilio: a signed webhook in, the Messages REST API out.

``POST /twilio/sms`` checks ``X-Twilio-Signature`` against ``PUBLIC_URL`` +
path (fail closed: 403), stores the message and answers empty TwiML at once;
the reply goes out through the REST API, from inside the event loop with
twilio's aiohttp client. Twilio does not redeliver incoming-message
webhooks, so a message is stored and acknowledged even while the server is
draining. STOP, START, HELP and their synonyms belong to the carrier and
Twilio's opt-out handling: they never reach the model. Replies are plain
text, split at 1,600 characters where SMS segments end, with typographic
characters (curly quotes, dashes) made GSM-7 here and ``smart_encoded`` at
Twilio, so a reply costs no more segments than it needs. Replies go out from
``TWILIO_MESSAGING_SERVICE_SID`` when set, else from ``TWILIO_FROM_NUMBER``.

MMS: ``NumMedia``, ``MediaUrl{N}`` and ``MediaContentType{N}`` become the
message's attachments; their bytes are fetched with the account's basic auth
(``media_fetch``), only from the Twilio API's own origin.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from aiohttp import web

from bot.channel import ChannelHost, ChannelState, ChannelTraits, Reply, Sink, mask
from bot.config import Config
from bot.formatting import PLAIN, FormatMode, split_sms
from bot.inbound import InboundMessage, MediaPart
from bot.media import MediaError, MediaFetch
from channels.common import Retry, send_with_retries

if TYPE_CHECKING:  # twilio is imported only once the channel is on
    from twilio.rest import Client

    from channels._twilio import HttpClient

log = logging.getLogger(__name__)

# Plain text only: reasoning is not shown by default (it costs segments).
TRAITS = ChannelTraits(limit=1600, tool_format=FormatMode.PLAIN, shows_reasoning=False)

PATH = "/twilio/sms"
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
CARRIER_KEYWORDS = frozenset(
    {
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "START",
        "UNSTOP",
        "YES",
        "HELP",
        "INFO",
        "REVOKE",
        "OPTOUT",
    }
)
API_BASE = "https://api.twilio.com"
MAX_MEDIA = 10  # Twilio sends at most ten media per MMS
# What Twilio's smart encoding would do, done before splitting so the split counts the
# segments that are really sent: typographic characters that force UCS-2 (70 a segment)
# replaced by their GSM-7 look-alikes (160 a segment).
SMART = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2033": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u2026": "...",
        "\u00a0": " ",
        "\u2002": " ",
        "\u2003": " ",
        "\u2009": " ",
        "\u200b": "",
        "\u2022": "-",
        "\u00ab": '"',
        "\u00bb": '"',
    }
)
PERMANENT = {21211, 21408, 21610, 21612, 21614}  # bad number, region, unsubscribed, unreachable


def classify(exc: BaseException) -> Retry | None:
    from twilio.base.exceptions import TwilioRestException

    if isinstance(exc, TwilioRestException):
        if exc.status == 429 or exc.code == 20429:
            return Retry(1.0)
        if exc.status >= 500:
            return Retry()
        return None
    if isinstance(exc, OSError | TimeoutError):
        return Retry()
    return None


def smart_encode(text: str) -> str:
    """``text`` with typographic punctuation as GSM-7 characters (fewer, cheaper segments)."""
    return text.translate(SMART)


def media_parts(params: Mapping[str, str]) -> tuple[MediaPart, ...]:
    """An MMS's media, as Twilio lists them in the webhook form."""
    try:
        count = min(int(params.get("NumMedia") or 0), MAX_MEDIA)
    except ValueError:
        return ()
    parts = []
    for index in range(count):
        url = params.get(f"MediaUrl{index}")
        if not url:
            continue
        mime = params.get(f"MediaContentType{index}", "")
        kind = (
            "image" if mime.startswith("image/") else "audio" if mime.startswith("audio/") else ""
        )
        parts.append(MediaPart(kind or "document", mime=mime, url=url))
    return tuple(parts)


class SmsSink(Sink):
    name = "sms"
    traits = TRAITS

    def __init__(
        self,
        from_number: str | None,
        *,
        messaging_service: str | None = None,
        sid: str = "",
        token: str = "",
        api_base: str | None = None,
    ) -> None:
        self.client: Client | None = None  # made in SmsChannel.start(), inside the event loop
        self.from_number = from_number
        self.messaging_service = messaging_service
        self._auth = "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()
        self._origin = _origin(api_base or API_BASE)

    def render(self, reply: Reply) -> list[Any]:
        return list(split_sms(smart_encode(PLAIN.compose(reply.markdown, reply.reasoning))))

    def _sender(self) -> dict[str, str]:
        if self.messaging_service:
            return {"messaging_service_sid": self.messaging_service}
        return {"from_": self.from_number or ""}

    async def media_fetch(self, message: InboundMessage, part: MediaPart) -> MediaFetch:
        """An MMS's media URL, with the account's credentials: only on Twilio's own origin."""
        if _origin(part.url) != self._origin:
            log.warning("refused an MMS media URL outside the Twilio API")
            raise MediaError("I couldn't download that file from the platform.")
        return MediaFetch(part.url, {"Authorization": self._auth})

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        from twilio.base.exceptions import TwilioRestException

        client = self.client
        if client is None:
            raise RuntimeError("the SMS channel has not been started")

        async def send() -> Any:
            return await client.messages.create_async(
                to=message.chat_id, body=str(part), smart_encoded=True, **self._sender()
            )

        try:
            await send_with_retries(send, classify, what="twilio message")
        except TwilioRestException as error:
            if error.code in PERMANENT:
                log.warning(
                    "twilio cannot deliver to this number (error %s); giving up", error.code
                )
                return
            raise

    async def notify(self, message: InboundMessage, text: str) -> None:
        await self.send_part(message, text)

    async def typing(self, message: InboundMessage) -> None:
        return None  # SMS has no typing indicator


class SmsChannel:
    name: ClassVar[str] = "sms"
    traits: ClassVar[ChannelTraits] = TRAITS

    def __init__(
        self,
        host: ChannelHost,
        sid: str,
        token: str,
        from_number: str | None,
        env: Mapping[str, str],
    ) -> None:
        self.host = host
        self.sid = sid
        self.token = token
        from twilio.request_validator import RequestValidator

        self.validator = RequestValidator(token)
        self.public_url = (env.get("PUBLIC_URL") or "").rstrip("/") or None
        self.base = env.get("TWILIO_API_BASE_URL")
        self.http: HttpClient | None = None
        self.sink = SmsSink(
            from_number,
            messaging_service=env.get("TWILIO_MESSAGING_SERVICE_SID") or None,
            sid=sid,
            token=token,
            api_base=self.base,
        )

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> SmsChannel | None:
        sid, token = env.get("TWILIO_ACCOUNT_SID"), env.get("TWILIO_AUTH_TOKEN")
        from_number = env.get("TWILIO_FROM_NUMBER")
        if not (sid and token and (from_number or env.get("TWILIO_MESSAGING_SERVICE_SID"))):
            return None
        return cls(host, sid, token, from_number, env)

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState:
        names = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
        missing = [n for n in names if not env.get(n)]
        service = env.get("TWILIO_MESSAGING_SERVICE_SID")
        if not (service or env.get("TWILIO_FROM_NUMBER")):
            missing.append("TWILIO_FROM_NUMBER (or TWILIO_MESSAGING_SERVICE_SID)")
        if missing:
            return ChannelState("sms", False, f"{', '.join(missing)} not set")
        public = env.get("PUBLIC_URL")
        where = (
            f"webhook {public.rstrip('/')}{PATH}"
            if public
            else "PUBLIC_URL is not set: signatures are checked against the request URL, "
            "which fails behind a proxy"
        )
        return ChannelState(
            "sms",
            True,
            f"account {mask(env['TWILIO_ACCOUNT_SID'])}, "
            f"from {'messaging service ' + mask(service) if service else env['TWILIO_FROM_NUMBER']}"
            f", {where}",
        )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self.webhook)

    async def start(self) -> None:
        # twilio's aiohttp client opens its session on creation, which needs the running loop
        from twilio.rest import Client

        from channels._twilio import HttpClient

        self.http = HttpClient(timeout=30)
        client = Client(self.sid, self.token, http_client=self.http)
        if self.base:
            client.api.base_url = self.base.rstrip("/")
        self.sink.client = client

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()

    def _url(self, request: web.Request) -> str:
        if self.public_url:
            query = f"?{request.query_string}" if request.query_string else ""
            return f"{self.public_url}{request.path}{query}"
        return str(request.url)

    async def webhook(self, request: web.Request) -> web.Response:
        signature = request.headers.get("X-Twilio-Signature", "")
        try:
            form = await request.post()
        except ValueError:
            return web.Response(status=400, text="expected a form body")
        params = {key: str(value) for key, value in form.items()}
        if not signature or not self.validator.validate(self._url(request), params, signature):
            return web.Response(status=403, text="bad signature")
        sender, body, sid = params.get("From"), params.get("Body"), params.get("MessageSid")
        if not sender or body is None or not sid:
            return web.Response(status=400, text="From, Body and MessageSid are required")
        twiml = web.Response(text=TWIML, content_type="text/xml")
        media = media_parts(params)
        if body.strip().upper() in CARRIER_KEYWORDS or not (body.strip() or media):
            return twiml  # opt-out words are Twilio's and the carrier's: never the model's
        inbound = InboundMessage(
            "sms", sender, sender, body, sid, context={"to": params.get("To")}, attachments=media
        )
        await self.host.dispatcher.submit(inbound, when_draining=True)
        return twiml


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()
