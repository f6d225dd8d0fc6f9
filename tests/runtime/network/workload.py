"""A stand-in for a container's program: a TCP server (port 8000) and a UDP echo (port 9000).

Run inside the container's network namespace; prints "ready <pid>" once both are bound. Each TCP client
gets "hello <name> from <peer address>" so tests see who answered and from which source address.
"""

import os
import socket
import sys
import threading

name = sys.argv[1]
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", 9000))
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", 8000))
tcp.listen(64)


def echo() -> None:
    while True:
        data, peer = udp.recvfrom(65535)
        udp.sendto(f"echo {name} ".encode() + data, peer)


threading.Thread(target=echo, daemon=True).start()
print(f"ready {os.getpid()}", flush=True)
sys.stdout.close()
os.close(1)
while True:
    conn, peer = tcp.accept()
    try:
        conn.sendall(f"hello {name} from {peer[0]}".encode())
    finally:
        conn.close()
