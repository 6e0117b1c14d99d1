"""A bare-socket WebSocket client that reads only when told to: a truly slow reader."""

import base64
import os
import socket
import struct

import orjson


class RawWs:
    def __init__(self, port: int, key: str, rcvbuf: int = 8192):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        nonce = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws?key={key} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_json(self, message: dict) -> None:
        payload = orjson.dumps(message)
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def wait_first_message(self, timeout: float = 10.0) -> None:
        """Receives until the first message is whole in the buffer (read_all still returns it)."""
        self.sock.settimeout(timeout)
        while True:
            data = self.buffer
            if len(data) >= 2:
                length, offset = data[1] & 0x7F, 2
                if length == 126:
                    length, offset = (
                        (struct.unpack("!H", data[2:4])[0], 4) if len(data) >= 4 else (1 << 64, 4)
                    )
                elif length == 127:
                    length, offset = (
                        (struct.unpack("!Q", data[2:10])[0], 10)
                        if len(data) >= 10
                        else (1 << 64, 10)
                    )
                if len(data) >= offset + length:
                    return
            chunk = self.sock.recv(4096)
            assert chunk, "closed before the first message"
            self.buffer += chunk

    def read_all(self, timeout: float = 10.0) -> tuple[list[dict], int | None]:
        """Reads until a close frame or the end: (the JSON messages, the close code or None).

        Returns at the close frame without waiting for the server to end the
        TCP connection (it waits a while for our closing handshake first).
        """
        self.sock.settimeout(timeout)
        messages: list[dict] = []
        data = memoryview(self.buffer)
        pending = b""
        while True:
            while len(data) >= 2:
                opcode, length, offset = data[0] & 0x0F, data[1] & 0x7F, 2
                if length == 126:
                    if len(data) < 4:
                        break
                    length, offset = struct.unpack("!H", data[2:4])[0], 4
                elif length == 127:
                    if len(data) < 10:
                        break
                    length, offset = struct.unpack("!Q", data[2:10])[0], 10
                if len(data) < offset + length:
                    break
                payload, data = data[offset : offset + length], data[offset + length :]
                if opcode == 0x1:
                    messages.append(orjson.loads(payload))
                elif opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    return messages, code
            pending = bytes(data)
            try:
                chunk = self.sock.recv(1 << 16)
            except (TimeoutError, ConnectionResetError):
                chunk = b""
            if not chunk:
                return messages, None
            data = memoryview(pending + chunk)

    def close(self) -> None:
        self.sock.close()
