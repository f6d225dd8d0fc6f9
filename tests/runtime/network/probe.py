"""Try to reach something and print one JSON line: {"ok": bool, "reply": str, "error": str}.

    probe.py tcp HOST PORT          connect, read what the server says
    probe.py udp HOST PORT          send "ping", wait for an answer
    probe.py icmp HOST              one ICMP echo (raw socket: needs CAP_NET_RAW where it runs)
    probe.py serve HOST PORT NAME   a TCP server answering "hello NAME from PEER" (prints "ready")
Short timeouts: a dropped packet shows as a timeout, a rejected one as refused/unreachable.
"""

import json
import os
import socket
import struct
import sys
import time

TIMEOUT = 3.0


def out(ok: bool, reply: str = "", error: str = "") -> None:
    print(json.dumps({"ok": ok, "reply": reply, "error": error}), flush=True)


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def main() -> None:
    kind, host = sys.argv[1], sys.argv[2]
    try:
        if kind == "tcp":
            with socket.create_connection((host, int(sys.argv[3])), timeout=TIMEOUT) as s:
                out(True, s.recv(4096).decode())
        elif kind == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(TIMEOUT)
                s.sendto(b"ping", (host, int(sys.argv[3])))
                out(True, s.recvfrom(4096)[0].decode())
        elif kind == "icmp":
            with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
                s.settimeout(TIMEOUT)
                ident = os.getpid() & 0xFFFF
                body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"flex-probe"
                packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
                s.sendto(packet, (host, 0))
                deadline = time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    data, peer = s.recvfrom(4096)
                    icmp = data[(data[0] & 0x0F) * 4:]
                    if peer[0] == host and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                        out(True, "echo reply")
                        return
                out(False, error="timeout")
        elif kind == "serve":
            srv = socket.socket()
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind((host, int(sys.argv[3])))
            srv.listen(64)
            print("ready", flush=True)
            while True:
                conn, peer = srv.accept()
                conn.sendall(f"hello {sys.argv[4]} from {peer[0]}".encode())
                conn.close()
    except OSError as err:
        out(False, error=type(err).__name__ + ": " + str(err))


main()
