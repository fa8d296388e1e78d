#!/usr/bin/env python3
"""Logins with passwords against a running chatd, for docs/PERFORMANCE.md ("Accounts").

    bench/login_storm.py register PORT COUNT PASSWORD   # COUNT accounts: storm0, storm1, ...
    bench/login_storm.py login PORT COUNT PASSWORD LOGINS [ROUNDS]

`login` starts LOGINS clients at once (account i % COUNT), each logging in with its password
(the session derives Argon2id, the broker compares), ROUNDS times over (each round waits for
every login of the one before); prints how many succeeded and how long the rounds took. Run
it beside `chatd-bench fanout` to see whether logins move the room's fan-out latency. A
bench tool, not a test: it asserts only that the logins it reports worked.
"""

import socket
import sys
import threading
import time

PATIENCE = 30.0


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        self.buf = b""

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n")

    def expect(self, text):
        deadline = time.monotonic() + PATIENCE
        while text.encode() not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {text!r} in {self.buf[-300:]!r}")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before {text!r}: {self.buf[-300:]!r}")
            self.buf += chunk
        at = self.buf.index(text.encode()) + len(text)
        self.buf = self.buf[at:]

    def close(self):
        try:
            self.send("/quit")
        finally:
            self.sock.close()


def register(port, count, password):
    for i in range(count):
        client = Client(port)
        client.expect("Please choose a nickname")
        client.send(f"storm{i}")
        client.expect("Type /help for commands.")
        client.send("/register")
        client.expect("Choose a password for")
        client.send(password)
        client.expect("Type it again:")
        client.send(password)
        client.expect("is registered; you are logged in")
        client.close()
    print(f"registered {count} accounts")


def login_once(port, nick, password, results, index):
    try:
        client = Client(port)
        client.expect("Please choose a nickname")
        client.send(nick)
        client.expect(f"Password for {nick}:")
        client.send(password)
        client.expect(f"Welcome back, {nick}.")
        results[index] = client
    except Exception as err:  # reported, counted as a failure
        results[index] = err


def login(port, count, password, logins, rounds):
    ok = 0
    failures = []
    started = time.monotonic()
    for _ in range(rounds):
        results = [None] * logins
        threads = [
            threading.Thread(
                target=login_once, args=(port, f"storm{i % count}", password, results, i)
            )
            for i in range(logins)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for result in results:
            if isinstance(result, Client):
                ok += 1
                result.sock.close()
            else:
                failures.append(str(result))
    took = time.monotonic() - started
    print(f"{ok} of {logins * rounds} logins in {took:.2f} s ({rounds} rounds of {logins})")
    for failure in failures[:5]:
        print(f"  failed: {failure}")


def main():
    mode, port, count, password = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if mode == "register":
        register(port, count, password)
    else:
        logins = int(sys.argv[5])
        rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 1
        login(port, count, password, logins, rounds)


if __name__ == "__main__":
    main()
