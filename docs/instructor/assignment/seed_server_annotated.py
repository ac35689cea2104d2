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
    # BUG 1 (et-blocking): every socket stays blocking, but edge-triggered epoll needs
    # BUG 1: non-blocking sockets (epoll(7)): a blocking call stalls the whole loop.

    epoll = select.epoll()
    epoll.register(listener.fileno(), select.EPOLLIN | select.EPOLLET)

    # BUG 5 (dictionaries never cleaned): entries are added for every connection and
    # BUG 5: never removed, so memory grows and a reused descriptor number finds old state.
    connections = {}
    addresses = {}

    while True:
        events = epoll.poll()
        for fileno, event in events:
            if fileno == listener.fileno():
                # BUG 2 (et-accept-once): one accept() per event; under ET a burst of
                # BUG 2: arrivals is one event and the rest stay in the backlog.
                connection, address = listener.accept()
                epoll.register(connection.fileno(), select.EPOLLIN | select.EPOLLET)
                connections[connection.fileno()] = connection
                addresses[connection.fileno()] = address
            # BUG 4 (exact-event-compare): == compares the whole mask; a reset
            # BUG 4: (IN|ERR|HUP) is never handled and its descriptor leaks.
            elif event == select.EPOLLIN:
                connection = connections[fileno]
                # BUG 3 (et-partial-read): one recv(1024) per event; under ET the rest
                # BUG 3: of a larger message is not reported again.
                data = connection.recv(1024)
                if data:
                    # BUG 1: sendall blocks the loop while this client is not reading.
                    connection.sendall(data)
                else:
                    epoll.unregister(fileno)
                    connection.close()
            # BUG 6 (no ERR/HUP handling): nothing handles EPOLLERR or EPOLLHUP, and
            # BUG 6: nothing limits how long one busy client keeps the loop (et-starvation).


if __name__ == "__main__":
    main()
