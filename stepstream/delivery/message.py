"""Outgoing messages, encoded and framed once.

A change fanned out to a thousand sockets is one `Message`: its UTF-8 bytes
and its WebSocket frame are built on first use and shared by every socket
that takes it (a server's frames are unmasked, so they are identical on every
uncompressed connection). It lives with delivery, which builds it; the
WebSocket layer only writes it.
"""

from websockets.frames import Frame, Opcode


class Message:
    __slots__ = ("text", "_payload", "_frame")

    def __init__(self, text: str):
        self.text = text
        self._payload: bytes | None = None
        self._frame: bytes | None = None

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            self._payload = self.text.encode()
        return self._payload

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = Frame(Opcode.TEXT, self.payload).serialize(mask=False)
        return self._frame
