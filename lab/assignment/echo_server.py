"""An epoll echo server, as the classic tutorial writes it.

Usage: python echo_server.py [--host 127.0.0.1] [--port 8888]

Every byte a client sends is sent back to it, in order. The server uses epoll in
edge-triggered mode. Your task is in README.md next to this file.
"""

import argparse
import select
import socket


def main() -> None:
    parser = argparse.ArgumentParser(description="epoll echo server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args()

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(128)

    epoll = select.epoll()
    epoll.register(listener.fileno(), select.EPOLLIN | select.EPOLLET)

    connections = {}
    addresses = {}

    while True:
        events = epoll.poll()
        for fileno, event in events:
            if fileno == listener.fileno():
                connection, address = listener.accept()
                epoll.register(connection.fileno(), select.EPOLLIN | select.EPOLLET)
                connections[connection.fileno()] = connection
                addresses[connection.fileno()] = address
            elif event == select.EPOLLIN:
                connection = connections[fileno]
                data = connection.recv(1024)
                if data:
                    connection.sendall(data)
                else:
                    epoll.unregister(fileno)
                    connection.close()


if __name__ == "__main__":
    main()
