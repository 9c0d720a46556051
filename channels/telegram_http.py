"""python-telegram-bot's HTTP layer on aiohttp: ``Bot(token, request=AiohttpRequest(...))``.

PTB sends every Bot API call through a ``BaseRequest``; its default one is on
httpx. The server already runs aiohttp, whose client costs about half the CPU
per call of httpx's (measured in the whole-system load benchmark, where a
reply and a typing signal are two calls a turn), so the channel's one pool of
connections lives there. PTB's own error handling is unchanged: it reads the
status and body returned here and raises ``RetryAfter``, ``BadRequest`` and the
rest as usual; connection trouble becomes ``NetworkError`` and timeouts
``TimedOut``, exactly as with httpx. A call without a file goes as a JSON body
(``RequestData.parameters``, dumped once), one with a file as multipart form data.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

DEFAULT_TIMEOUT = 5.0
_JSON = {"Content-Type": "application/json"}


class AiohttpRequest(BaseRequest):
    def __init__(
        self,
        *,
        connection_pool_size: int = 64,
        read_timeout: float | None = DEFAULT_TIMEOUT,
        connect_timeout: float | None = DEFAULT_TIMEOUT,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        self.pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._media_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_size),
                headers={"User-Agent": self.USER_AGENT},
            )

    async def shutdown(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        files = request_data.multipart_data if request_data else None
        data: Any = None
        headers = None
        if files:
            assert request_data is not None
            form = aiohttp.FormData(request_data.json_parameters)
            for name, (filename, content, mime) in files.items():
                form.add_field(name, content, filename=filename, content_type=mime)
            data = form
        elif request_data is not None:
            # A JSON body, which the Bot API takes for every call without a file: one
            # C-encoded dump instead of a JSON string per parameter, then urlencoded.
            data = json.dumps(request_data.parameters, ensure_ascii=False).encode()
            headers = _JSON
        timeout = aiohttp.ClientTimeout(
            sock_connect=self._given(connect_timeout, self._connect_timeout),
            sock_read=self._given(read_timeout, self._read_timeout),
            total=self._media_timeout if files else None,
        )
        try:
            async with self._session.request(
                method, url, data=data, headers=headers, timeout=timeout
            ) as response:
                return response.status, await response.read()
        except TimeoutError as error:
            raise TimedOut from error
        except aiohttp.ClientError as error:
            raise NetworkError(f"aiohttp.{type(error).__name__}: {error}") from error

    @staticmethod
    def _given(value: Any, default: float | None) -> float | None:
        """A timeout passed to the call, or ours when PTB passes its "not given" marker."""
        return default if isinstance(value, type(BaseRequest.DEFAULT_NONE)) else value


__all__ = ["AiohttpRequest"]
