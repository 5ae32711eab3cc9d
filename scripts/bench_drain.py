#!/usr/bin/env python3
"""bench_drain.py: watch one nsqd's queues through its /stats, for scripts/bench.sh.

  bench_drain.py wait HTTP TOPIC TOTAL TIMEOUT
      Wait until the channels of TOPIC hold TOTAL messages between them (the
      topic has handed every published message to every channel), so memory
      and CPU are read after the fan-out, not halfway through it.

  bench_drain.py drain HTTP TOPIC CHANNEL EXPECT TIMEOUT -- READER ARGS...
      Start READER (upstream's Go bench_reader), and time from its start to
      the moment TOPIC and CHANNEL hold nothing queued and the messages in
      flight stop being finished: its true rate over the drain of EXPECT
      messages. The Go reader itself reads for all of its --runfor and
      divides by that, so its own figure is capped by what was queued divided
      by --runfor; here it gets a --runfor no shorter than TIMEOUT and is
      stopped once the channel is drained. Prints one JSON line like our
      bench_reader's, with "timed_by":"drain" and "unfinished" (messages it
      received but whose FIN it never flushed; see QUIET).

One long-lived process polling with one keep-alive HTTP connection every
10 ms costs nsqd a stats request and this box a fraction of a percent of a
core; a shell loop of curl processes would cost far more of a 2-core box.
"""

import http.client
import json
import signal
import subprocess
import sys
import time

POLL = 0.01
# The Go reader writes its FINs through a buffer it flushes only now and
# then, so the last few hundred stay in flight, unsent, until it exits. Once
# nothing is queued and the in-flight count has not moved for this long, the
# drain is over; it ended when the count last moved.
QUIET = 0.3


class Stats:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def topic(self, topic):
        """The topic's stats object, or None while it does not exist."""
        self.conn.request("GET", f"/stats?format=json&topic={topic}&include_clients=false&include_mem=false")
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise SystemExit(f"bench_drain: /stats answered {resp.status}: {body[:200]!r}")
        doc = json.loads(body)
        doc = doc.get("data", doc)  # an older client-facing shape wraps it
        for t in doc.get("topics") or []:
            if t.get("topic_name") == topic:
                return t
        return None


def channel(t, name):
    for c in (t or {}).get("channels") or []:
        if c.get("channel_name") == name:
            return c
    return None


def wait(addr, topic, total, timeout):
    stats = Stats(addr)
    deadline = time.monotonic() + timeout
    held = 0
    while time.monotonic() < deadline:
        t = stats.topic(topic)
        held = sum(c.get("depth", 0) for c in (t or {}).get("channels") or [])
        if held >= total:
            return 0
        time.sleep(POLL)
    print(f"bench_drain: channels of {topic} hold {held} of {total} after {timeout}s", file=sys.stderr)
    return 1


def drain(addr, topic, chan, expect, timeout, reader):
    stats = Stats(addr)
    start = time.monotonic()
    proc = subprocess.Popen(reader, stdout=subprocess.DEVNULL)
    queued, in_flight = expect, 0
    last, changed = None, start
    done = False
    try:
        while time.monotonic() - start < timeout:
            t = stats.topic(topic)
            c = channel(t, chan)
            now = time.monotonic()
            if c is not None:
                # The topic's own depth too: a channel the reader has just
                # created is empty until the topic hands it the backlog.
                queued = t.get("depth", 0) + c.get("depth", 0)
                in_flight = c.get("in_flight_count", 0)
                if (queued, in_flight) != last:
                    last, changed = (queued, in_flight), now
                if queued == 0 and (in_flight == 0 or now - changed >= QUIET):
                    done = True
                    break
            if proc.poll() is not None:
                break
            time.sleep(POLL)
        # The drain ended when the count last moved.
        seconds = changed - start
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    msgs = expect - queued
    if not done:
        print(f"bench_drain: {queued} of {expect} messages still queued after {seconds:.1f}s",
              file=sys.stderr)
    print(json.dumps({
        "tool": "bench_reader",
        "tools": "upstream",
        "timed_by": "drain",
        "msgs": msgs,
        "unfinished": in_flight,
        "seconds": round(seconds, 6),
        "msgs_per_sec": round(msgs / seconds, 3) if seconds > 0 else 0,
    }, separators=(",", ":")))
    return 0 if done else 1


def main(argv):
    if len(argv) >= 6 and argv[1] == "wait":
        return wait(argv[2], argv[3], int(argv[4]), float(argv[5]))
    if len(argv) >= 9 and argv[1] == "drain" and argv[7] == "--":
        return drain(argv[2], argv[3], argv[4], int(argv[5]), float(argv[6]), argv[8:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
