"""SMS over Twilio: a signed webhook in, the Messages REST API out.

``POST /twilio/sms`` checks ``X-Twilio-Signature`` against ``PUBLIC_URL`` +
path (fail closed: 403), stores the message and answers empty TwiML at once;
the reply goes out through the REST API, from inside the event loop with
twilio's aiohttp client. Twilio does not redeliver incoming-message
webhooks, so a message is stored and acknowledged even while the server is
draining. STOP, START, HELP and their synonyms belong to the carrier and
Twilio's opt-out handling: they never reach the model. Replies are plain
text, split at 1,600 characters where SMS segments end.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from bot.channel import ChannelHost, ChannelState, ChannelTraits, Reply, Sink, mask
from bot.config import Config
from bot.formatting import PLAIN, FormatMode, split_sms
from bot.inbound import InboundMessage
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


class SmsSink(Sink):
    name = "sms"
    traits = TRAITS

    def __init__(self, from_number: str) -> None:
        self.client: Client | None = None  # made in SmsChannel.start(), inside the event loop
        self.from_number = from_number

    def render(self, reply: Reply) -> list[Any]:
        return list(split_sms(PLAIN.compose(reply.markdown, reply.reasoning)))

    async def send_part(self, message: InboundMessage, part: Any) -> None:
        from twilio.base.exceptions import TwilioRestException

        client = self.client
        if client is None:
            raise RuntimeError("the SMS channel has not been started")

        async def send() -> Any:
            return await client.messages.create_async(
                to=message.chat_id, from_=self.from_number, body=str(part)
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
        self, host: ChannelHost, sid: str, token: str, from_number: str, env: Mapping[str, str]
    ) -> None:
        self.host = host
        self.sid = sid
        self.token = token
        from twilio.request_validator import RequestValidator

        self.validator = RequestValidator(token)
        self.public_url = (env.get("PUBLIC_URL") or "").rstrip("/") or None
        self.base = env.get("TWILIO_API_BASE_URL")
        self.http: HttpClient | None = None
        self.sink = SmsSink(from_number)

    @classmethod
    def from_env(cls, host: ChannelHost, env: Mapping[str, str]) -> SmsChannel | None:
        sid, token = env.get("TWILIO_ACCOUNT_SID"), env.get("TWILIO_AUTH_TOKEN")
        from_number = env.get("TWILIO_FROM_NUMBER")
        if not (sid and token and from_number):
            return None
        return cls(host, sid, token, from_number, env)

    @classmethod
    def describe(cls, config: Config, env: Mapping[str, str]) -> ChannelState:
        names = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER")
        missing = [n for n in names if not env.get(n)]
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
            f"account {mask(env['TWILIO_ACCOUNT_SID'])}, from {env['TWILIO_FROM_NUMBER']}, {where}",
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
        if body.strip().upper() in CARRIER_KEYWORDS or not body.strip():
            return twiml
        inbound = InboundMessage("sms", sender, sender, body, sid, context={"to": params.get("To")})
        await self.host.dispatcher.submit(inbound, when_draining=True)
        return twiml
