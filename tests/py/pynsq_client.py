"""Drive the real pynsq (0.9.1, tornado 6) against an nsqd, for tests/tests/pynsq.rs.

Modes:
  roundtrip  a Writer publishes --count messages, a Reader consumes them all;
             exit 0 when every message arrived once and each client
             connected exactly once.
  denied     a Writer (with --secret) publishes once; exit 0 when nsqd
             refuses it with E_UNAUTHORIZED.
  expired    a Writer publishes one message at a time until nsqd refuses
             (the auth server stops granting once the first grant expires);
             exit 0 when at least one publish succeeded before the refusal.

Prints one JSON line with what happened. Any other outcome exits non-zero.
"""

import argparse
import errno
import functools
import json
import ssl
import sys
import urllib.request

import nsq
import nsq.conn
import nsq.deflate_socket
import nsq.snappy_socket
from tornado.ioloop import IOLoop


class _WouldBlockSocketModule:
    """pynsq 0.9.1 signals "no decompressed data yet" with
    socket.error(errno.EWOULDBLOCK), which on Python 3 carries no errno, so
    tornado 6 takes it for a broken connection (nsqio/pynsq#258). Raise the
    BlockingIOError tornado expects instead. Only the compressed sockets'
    module reference is replaced."""

    def __getattr__(self, name):
        import socket
        return getattr(socket, name)

    @staticmethod
    def error(code, *args):
        if code in (errno.EWOULDBLOCK, errno.EAGAIN):
            return BlockingIOError(code, "no decompressed data yet")
        import socket
        return socket.error(code, *args)


nsq.snappy_socket.socket = _WouldBlockSocketModule()
nsq.deflate_socket.socket = _WouldBlockSocketModule()

# Count every connection attempt, per client, so a silent reconnect shows.
CONNECTS = {"writer": 0, "reader": 0}
CLOSES = {"writer": 0, "reader": 0}
_orig_connect = nsq.conn.AsyncConn.connect


def _counting_connect(self):
    role = self._test_role
    CONNECTS[role] += 1
    self.on("close", lambda **kw: CLOSES.__setitem__(role, CLOSES[role] + 1))
    return _orig_connect(self)


nsq.conn.AsyncConn.connect = _counting_connect


def conn_kwargs(args):
    kw = {}
    if "tls" in args.features:
        kw["tls_v1"] = True
        kw["tls_options"] = {
            "cert_reqs": ssl.CERT_REQUIRED,
            "ca_certs": args.ca,
        }
    if "snappy" in args.features:
        kw["snappy"] = True
    if "deflate" in args.features:
        kw["deflate"] = True
        kw["deflate_level"] = 6
    if args.secret:
        kw["auth_secret"] = args.secret
    return kw


def finish(code, **report):
    if getattr(sys, "exit_code", None) is not None:
        return  # the first outcome counts
    if ARGS.http:
        # What nsqd says about the connections, while they are still open.
        try:
            with urllib.request.urlopen("http://%s/stats?format=json" % ARGS.http,
                                        timeout=5) as r:
                report["stats"] = json.load(r)
        except Exception as e:  # reported, and the Rust side then fails
            report["stats_error"] = str(e)
    report["connects"] = CONNECTS
    report["closes"] = CLOSES
    print(json.dumps(report), flush=True)
    IOLoop.current().stop()
    sys.exit_code = code


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", required=True)
    p.add_argument("--tcp", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--features", default="")
    p.add_argument("--ca", default="")
    p.add_argument("--secret", default="")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--http", default="")
    args = p.parse_args()
    global ARGS
    ARGS = args
    args.features = [f for f in args.features.split(",") if f]
    kw = conn_kwargs(args)
    loop = IOLoop.current()
    sys.exit_code = None
    state = {"published": 0, "pub_errors": [], "received": set(), "dups": 0}

    # Tag the connections each client makes.
    orig_init = nsq.conn.AsyncConn.__init__

    # wraps() keeps the signature: pynsq validates keyword arguments by it.
    @functools.wraps(orig_init)
    def tagged_init(self, *a, **k):
        orig_init(self, *a, **k)
        self._test_role = tagged_init.role

    tagged_init.role = "writer"
    nsq.conn.AsyncConn.__init__ = tagged_init

    writer = nsq.Writer([args.tcp], reconnect_interval=0.2, **kw)

    def start_reader():
        tagged_init.role = "reader"

        def handler(msg):
            body = msg.body.decode()
            if body in state["received"]:
                state["dups"] += 1
            state["received"].add(body)
            if len(state["received"]) == args.count:
                ok = (state["dups"] == 0 and CONNECTS == {"writer": 1, "reader": 1}
                      and CLOSES == {"writer": 0, "reader": 0})
                loop.add_callback(lambda: finish(0 if ok else 3, mode=args.mode,
                                                 published=state["published"],
                                                 received=len(state["received"]),
                                                 dups=state["dups"]))
            return True

        nsq.Reader(topic=args.topic, channel="pynsq", message_handler=handler,
                   nsqd_tcp_addresses=[args.tcp], max_in_flight=200,
                   lookupd_poll_interval=3600, **kw)

    def publish_next():
        n = state["published"]
        if n == args.count:
            start_reader()
            return
        writer.pub(args.topic, ("msg-%d-" % n + "x" * (n % 300)).encode(), on_pub)

    def on_pub(conn, data):
        if isinstance(data, Exception):
            state["pub_errors"].append("%s: %s" % (type(data).__name__, data))
            if args.mode == "roundtrip":
                finish(4, mode=args.mode, error=state["pub_errors"][-1])
                return
            ok = "E_UNAUTHORIZED" in str(data)
            if args.mode == "expired":
                ok = ok and state["published"] >= 1
            finish(0 if ok and CONNECTS["writer"] == 1 else 5, mode=args.mode,
                   published=state["published"], errors=state["pub_errors"])
            return
        state["published"] += 1
        if args.mode == "denied":
            finish(6, mode=args.mode, error="publish was accepted")
            return
        if args.mode == "expired":
            loop.call_later(0.05, publish_next)
        else:
            publish_next()

    def first_publish():
        if writer.conns:
            publish_next()
        else:
            loop.call_later(0.02, first_publish)

    loop.call_later(0.02, first_publish)
    loop.call_later(args.timeout, lambda: finish(
        2, mode=args.mode, error="timed out", published=state["published"],
        received=len(state["received"]), pub_errors=state["pub_errors"]))
    loop.start()
    sys.exit(1 if sys.exit_code is None else sys.exit_code)


if __name__ == "__main__":
    main()
