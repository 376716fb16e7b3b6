"""A TCP proxy in front of PostgreSQL that can lose the reply to one statement.

The fault it injects is the one a retrying client must survive: the statement
reaches the server and completes (an autocommit statement or a COMMIT has
committed), then the connection drops before the client reads the reply.

    with PgProxy() as proxy:
        engine = create_engine_for(proxy.url(db_url))
        armed = proxy.lose_reply("COMMIT", after="UPDATE t")
        ...  # the client's COMMIT raises "server closed the connection unexpectedly"
        assert armed.wait(10)

How: each client connection gets its own upstream connection and two threads,
one per direction, that frame the PostgreSQL v3 protocol (a type byte, then an
int32 length that counts itself) and forward message by message. When the
client sends the armed simple query ('Q'), the connection starts swallowing:
the server's whole reply, up to and including ReadyForQuery ('Z'), is read and
dropped, then both sockets are shut down.

Limits (it is a test tool, not a pooler):
- Only the simple query protocol is matched. psycopg2 sends every statement
  that way; the extended protocol (Parse/Bind/Execute, e.g. psycopg 3 or
  asyncpg) passes through but is never matched.
- The client must wait for each reply before sending the next query (no
  pipelining), as libpq does outside pipeline mode.
- A swallowed COPY FROM STDIN would wait for client data forever: do not arm
  a pattern that matches one.
- Whole messages are held in memory; fine for test data.
- A connection whose SSLRequest or GSSENCRequest the server accepts is piped
  as raw bytes and never matched; `url()` disables both so that this does
  not happen.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.engine import make_url

# Request codes of the untyped first message of a connection (protocol v3).
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
_MAX_UNTYPED = 10_000  # a startup packet is small; anything bigger is not PostgreSQL

_CONNECT_TIMEOUT = 10.0  # seconds to reach the upstream server
_ACCEPT_POLL = 0.1  # seconds: how soon the accept loop notices close()
_JOIN_TIMEOUT = 5.0  # seconds close() waits for all its threads together
_CHUNK = 65536


class _Closed(ConnectionError):
    """A peer closed its socket (EOF), or sent something that is not the protocol."""


class Armed:
    """A lost-reply fault, armed by `PgProxy.lose_reply`."""

    def __init__(self, pattern: str, after: str | None) -> None:
        self.pattern = pattern
        self.after = after
        # Set once the reply has been discarded and both sockets shut down.
        self.fired = threading.Event()
        self.query: str | None = None  # the SQL text whose reply was lost, once fired

    def wait(self, timeout: float) -> bool:
        """Whether the fault fired within `timeout` seconds."""
        return self.fired.wait(timeout)

    def __repr__(self) -> str:
        return f"Armed(pattern={self.pattern!r}, after={self.after!r}, fired={self.fired.is_set()})"


class PgProxy:
    """A TCP proxy in front of PostgreSQL that can lose the reply to one statement."""

    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 5432) -> None:
        self.upstream = (upstream_host, upstream_port)
        # Bound now, so that `port` and `url()` are usable before `start()`.
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_ACCEPT_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()  # guards everything below
        self._stopping = False
        self._armed: Armed | None = None
        self._connections: set[_Connection] = set()
        self._threads: list[threading.Thread] = []
        self._accept_thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    def start(self) -> PgProxy:
        """Start accepting connections; returns self."""
        with self._lock:
            if self._accept_thread is not None or self._stopping:
                raise RuntimeError("a PgProxy starts once")
            self._accept_thread = self._spawn_locked(self._accept_loop, "accept")
        return self

    def url(self, db_url: str) -> str:
        """`db_url` (a postgresql:// URL to the upstream) rewritten to go through the proxy.

        SSL and GSS encryption are disabled so that the protocol stays readable.
        """
        url = make_url(db_url).set(host="127.0.0.1", port=self.port)
        url = url.update_query_dict({"sslmode": "disable", "gssencmode": "disable"})
        return url.render_as_string(hide_password=False)

    def lose_reply(self, pattern: str, *, after: str | None = None) -> Armed:
        """Arm a one-shot fault: lose the reply to the next simple query matching `pattern`.

        A 'Q' message matches when its SQL text contains `pattern` (case-sensitive)
        and, if `after` is given, an EARLIER 'Q' of the same connection in the same
        transaction contained `after`. "Same transaction" is the server's word: the
        connection's window of earlier queries is emptied whenever the server reports
        the connection idle (ReadyForQuery with status 'I'), i.e. after every COMMIT,
        ROLLBACK, and autocommit statement; so an autocommit "UPDATE t" never scopes
        a later transaction, and a failed transaction ('E') stays open until its
        ROLLBACK.

        The matching query is forwarded as usual; the server's whole reply, up to and
        including ReadyForQuery, is discarded; then both sockets of that connection are
        shut down, and the client sees the connection drop (psycopg2: "server closed
        the connection unexpectedly"). Only one fault is armed at a time: arming again
        replaces the previous one, which then never fires.
        """
        armed = Armed(pattern, after)
        with self._lock:
            self._armed = armed
        return armed

    def close(self) -> None:
        """Stop accepting, drop every connection, and join the threads (bounded wait)."""
        with self._lock:
            self._stopping = True  # from now on no connection or thread starts
            accept_thread = self._accept_thread
        if accept_thread is None:
            self._listener.close()
        else:
            # The accept thread owns the listener: it closes it within _ACCEPT_POLL.
            accept_thread.join(_JOIN_TIMEOUT)
        with self._lock:
            connections = list(self._connections)
            threads = list(self._threads)
        for connection in connections:
            connection.shutdown()  # wakes both of its threads, which then exit
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> PgProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals, called by the connections' threads --------------------------------

    def _take_armed(self, query: str, earlier: list[str]) -> Armed | None:
        """Disarm and return the armed fault if `query` (after `earlier` ones) matches it."""
        with self._lock:
            armed = self._armed
            if armed is None or armed.pattern not in query:
                return None
            if armed.after is not None and not any(armed.after in q for q in earlier):
                return None
            self._armed = None
            return armed

    def _spawn(self, target: Callable[[], None], role: str) -> threading.Thread | None:
        """Start a daemon thread, unless close() has begun (then None)."""
        with self._lock:
            if self._stopping:
                return None
            return self._spawn_locked(target, role)

    def _spawn_locked(self, target: Callable[[], None], role: str) -> threading.Thread:
        # Every thread is recorded so that close() can join it; dead ones are pruned.
        self._threads = [t for t in self._threads if t.is_alive()]
        thread = threading.Thread(target=target, name=f"pgproxy-{self.port}-{role}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def _forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _accept_loop(self) -> None:
        try:
            while True:
                try:
                    client, _ = self._listener.accept()
                except TimeoutError:
                    with self._lock:
                        if self._stopping:
                            return
                    continue
                client.settimeout(None)  # the pumps block; close() wakes them by shutdown
                with self._lock:
                    if self._stopping:
                        client.close()
                        return
                    connection = _Connection(self, client, next(self._ids))
                    self._connections.add(connection)
                    self._spawn_locked(connection.run, f"c{connection.ident}-client")
        except OSError:
            return  # the listener failed; nothing more to accept
        finally:
            self._listener.close()


class _Reader:
    """Reads exact byte counts from a blocking socket, buffering what recv() returns."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            chunk = self.sock.recv(max(_CHUNK, count - len(self._buffer)))
            if not chunk:
                raise _Closed("EOF")
            self._buffer += chunk
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def read_untyped(self) -> bytes:
        """The first message(s) of a connection: int32 length (counting itself) + payload."""
        header = self.read_exactly(4)
        (length,) = struct.unpack("!i", header)
        if not 8 <= length <= _MAX_UNTYPED:
            raise _Closed(f"bad startup length {length}")
        return header + self.read_exactly(length - 4)

    def read_message(self) -> tuple[bytes, bytes]:
        """A typed message: (type byte, the whole message as sent on the wire)."""
        header = self.read_exactly(5)
        (length,) = struct.unpack("!i", header[1:])
        if length < 4:
            raise _Closed(f"bad message length {length}")
        return header[:1], header + self.read_exactly(length - 4)

    def drain(self) -> bytes:
        """Whatever is buffered but not yet read (before switching to a raw pipe)."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class _Connection:
    """One client connection and its upstream connection, pumped by two threads.

    The client->server thread (`run`) owns the sockets: it connects upstream,
    starts the server->client thread, and closes both sockets once that thread has
    ended. Other threads only shut the sockets down, which wakes any blocked recv or
    send without the risk of a closed descriptor being reused under a running thread.
    """

    def __init__(self, proxy: PgProxy, client: socket.socket, ident: int) -> None:
        self.proxy = proxy
        self.client = client
        self.ident = ident
        self.server: socket.socket | None = None
        self._lock = threading.Lock()  # guards the fields below
        self._shut = False
        self._released = False
        # Texts of this transaction's earlier 'Q' messages (see PgProxy.lose_reply).
        self._transaction: list[str] = []
        # Set (before the query is forwarded) while the reply to it is being swallowed.
        self._swallowing: tuple[Armed, str] | None = None

    def run(self) -> None:
        replies: threading.Thread | None = None
        try:
            server = socket.create_connection(self.proxy.upstream, timeout=_CONNECT_TIMEOUT)
            server.settimeout(None)
            with self._lock:
                self.server = server
                if self._shut:  # close() came while connecting
                    return
            for sock in (self.client, server):
                # Messages are forwarded one by one: do not let Nagle hold them back.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client_reader, server_reader = _Reader(self.client), _Reader(server)
            if self._negotiate(client_reader, server_reader):
                replies = self.proxy._spawn(lambda: self._pump_replies(server_reader), self._role())
                if replies is not None:
                    self._pump_queries(client_reader, server)
            else:
                replies = self.proxy._spawn(
                    lambda: self._pipe(server_reader, self.client), self._role()
                )
                if replies is not None:
                    self._pipe(client_reader, server)
        except OSError:
            pass  # EOF, reset, refused, or shut down by close(): this connection is over
        finally:
            self.shutdown()
            if replies is not None:
                replies.join()  # prompt: its sockets are shut down
            with self._lock:
                self._released = True
                self.client.close()
                if self.server is not None:
                    self.server.close()
            self.proxy._forget(self)

    def shutdown(self) -> None:
        """Shut both sockets down: each peer sees EOF, and blocked pumps wake up."""
        with self._lock:
            self._shut = True
            if self._released:
                return
            for sock in (self.client, self.server):
                if sock is not None:
                    with contextlib.suppress(OSError):  # already shut or reset
                        sock.shutdown(socket.SHUT_RDWR)

    def _role(self) -> str:
        return f"c{self.ident}-server"

    def _negotiate(self, client: _Reader, server: _Reader) -> bool:
        """Forward the untyped messages up to the startup packet.

        False if the server accepted SSL or GSS encryption (the rest is not readable).
        """
        while True:
            packet = client.read_untyped()
            server.sock.sendall(packet)
            (code,) = struct.unpack("!i", packet[4:8])
            if code not in (SSL_REQUEST, GSSENC_REQUEST):
                return True  # the startup packet (or a CancelRequest): typed from now on
            answer = server.read_exactly(1)  # 'N', or 'S' / 'G' to encrypt
            client.sock.sendall(answer)
            if answer in (b"S", b"G"):
                return False

    def _pipe(self, source: _Reader, destination: socket.socket) -> None:
        """Copy raw bytes until EOF (an encrypted connection), then drop both sides."""
        try:
            destination.sendall(source.drain())  # bytes read past the negotiation, if any
            while chunk := source.sock.recv(_CHUNK):
                destination.sendall(chunk)
        except OSError:
            pass
        finally:
            self.shutdown()

    def _pump_queries(self, client: _Reader, server: socket.socket) -> None:
        while True:
            kind, message = client.read_message()
            if kind == b"Q":
                query = message[5:].split(b"\0", 1)[0].decode("utf-8", errors="replace")
                with self._lock:
                    earlier = list(self._transaction)
                    self._transaction.append(query)
                armed = self.proxy._take_armed(query, earlier)
                if armed is not None:
                    # Before forwarding: the reply must be swallowed from its first byte.
                    self._swallowing = (armed, query)
            server.sendall(message)

    def _pump_replies(self, server: _Reader) -> None:
        try:
            while True:
                kind, message = server.read_message()
                if kind == b"Z" and message[5:6] == b"I":
                    # Idle: the transaction ended. Cleared before the client can see this
                    # 'Z' and send its next query, so the window never mixes transactions.
                    with self._lock:
                        self._transaction.clear()
                swallowing = self._swallowing
                if swallowing is None:
                    self.client.sendall(message)
                elif kind == b"Z":  # the end of the swallowed reply
                    self.shutdown()
                    armed, query = swallowing
                    armed.query = query
                    armed.fired.set()
                    return
        except OSError:
            pass
        finally:
            self.shutdown()  # either side gone: drop the other too
