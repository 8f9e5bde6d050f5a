"""Tests for the judge hook and the OpenAI-compatible adapter, against a fake server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from contextrl.errors import MiningError
from contextrl.miner.judge import JudgeVerdict, OpenAIChatJudge, judge_messages, parse_judge_reply
from contextrl.miner.pair import Context, ContrastivePair, text_difference
from contextrl.miner.verify import verify_pair

POS = """## Step 0: bash
Action: $ python -m pytest tests/test_units.py -q -rA
Observation (exit 1):
PASSED tests/test_units.py::test_meters
FAILED tests/test_units.py::test_feet_to_meters - assert 0.3 == 0.3048
1 failed, 1 passed in 0.05s
"""
NEG = POS.replace("FAILED tests/test_units.py::test_feet_to_meters - assert 0.3 == 0.3048", "PASSED tests/test_units.py::test_feet_to_meters") \
    .replace("(exit 1)", "(exit 0)").replace("1 failed, 1 passed in 0.05s", "2 passed in 0.05s")
QUERY = "feet_to_meters(1) returns 0.3 instead of 0.3048."
ANSWER = "The conversion factor in units.py is rounded to 0.3; use 0.3048."


def _pair() -> ContrastivePair:
    return ContrastivePair("trajectory", QUERY, ANSWER, Context(text=POS), Context(text=NEG), text_difference(POS, NEG))


def _completion(content) -> bytes:
    return json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": "judge-8b",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).encode()


class FakeServer:
    """A local OpenAI-compatible endpoint whose reply is set per test."""

    def __init__(self):
        self.reply: tuple[int, bytes] = (200, _completion('{"verdict": "accept", "reason": "only C+ shows the failing test"}'))
        self.requests: list[tuple[str, dict, dict]] = []
        self.release = threading.Event()
        self.stall = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((self.path, dict(self.headers), body))
                if fake.stall:
                    fake.release.wait(10)
                status, payload = fake.reply
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


def test_accepting_reply(server):
    judge = OpenAIChatJudge(server.url, "judge-8b", api_key="sk-local", timeout=5)
    v = judge(_pair())
    assert v == JudgeVerdict(True, "only C+ shows the failing test")
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-local"
    assert body["model"] == "judge-8b" and body["temperature"] == 0.0
    assert body["messages"][0]["role"] == "system" and "near-identical" in body["messages"][0]["content"]
    user = body["messages"][1]["content"]
    assert QUERY in user and ANSWER in user
    assert user.index("POSITIVE context:") < user.index("FAILED tests/test_units.py::test_feet_to_meters") < user.index("NEGATIVE context:")


def test_rejecting_reply_and_verify_records_it(server):
    server.reply = (200, _completion('```json\n{"verdict": "reject", "reason": "C- also supports the answer"}\n```'))
    judge = OpenAIChatJudge(f"http://127.0.0.1:{server.port}", "judge-8b", timeout=5)
    assert judge(_pair()) == JudgeVerdict(False, "C- also supports the answer")
    assert "Authorization" not in server.requests[0][1] and server.requests[0][0] == "/v1/chat/completions"
    out = verify_pair(_pair(), judge=judge)
    assert not out.verdict.ok
    assert [(c.name, c.passed, c.detail) for c in out.verdict.failed] == [("judge", False, "C- also supports the answer")]


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (_completion("Both contexts look plausible to me."), "no verdict found in judge reply: Both contexts"),
        (_completion(None), "malformed response (TypeError: message content is NoneType)"),
        (_completion('{"verdict": "maybe", "reason": "unsure"}'), "unknown verdict 'maybe'"),
        (b"<html>gateway</html>", "malformed response (JSONDecodeError"),
        (json.dumps({"choices": []}).encode(), "malformed response (IndexError"),
    ],
)
def test_malformed_reply_is_a_recorded_error(server, payload, fragment):
    server.reply = (200, payload)
    v = OpenAIChatJudge(server.url, "judge-8b", timeout=5)(_pair())
    assert v.ok is False and v.error is True and v.reason.startswith("judge error: ") and fragment in v.reason
    with pytest.raises(MiningError, match="judge judge-8b at http://127.0.0.1:%d/v1/chat/completions" % server.port):
        OpenAIChatJudge(server.url, "judge-8b", timeout=5, strict=True)(_pair())


def test_server_error_500(server):
    server.reply = (500, b'{"error": {"message": "CUDA out of memory"}}')
    v = OpenAIChatJudge(server.url, "judge-8b", timeout=5)(_pair())
    assert not v.ok and v.error and "HTTP 500" in v.reason and "CUDA out of memory" in v.reason
    out = verify_pair(_pair(), judge=OpenAIChatJudge(server.url, "judge-8b", timeout=5))
    assert out.verdict.failed[0].name == "judge" and "HTTP 500" in out.verdict.failed[0].detail
    with pytest.raises(MiningError, match="HTTP 500"):
        verify_pair(_pair(), judge=OpenAIChatJudge(server.url, "judge-8b", timeout=5, strict=True))


def test_timeout(server):
    server.stall = True
    t0 = time.monotonic()
    v = OpenAIChatJudge(server.url, "judge-8b", timeout=0.3)(_pair())
    assert time.monotonic() - t0 < 5
    assert v == JudgeVerdict(False, "judge error: timed out after 0.3s", error=True)
    with pytest.raises(MiningError, match="timed out"):
        OpenAIChatJudge(server.url, "judge-8b", timeout=0.3, strict=True)(_pair())


def test_unreachable_server_is_a_recorded_error():
    s = FakeServer()
    url = s.url
    s.close()  # nothing listens on that port any more
    v = OpenAIChatJudge(url, "judge-8b", timeout=2)(_pair())
    assert not v.ok and v.error and "unreachable" in v.reason


def test_url_normalisation_and_validation():
    assert OpenAIChatJudge("http://127.0.0.1:8000", "m").url == "http://127.0.0.1:8000/v1/chat/completions"
    assert OpenAIChatJudge("http://127.0.0.1:8000/v1/", "m").url == "http://127.0.0.1:8000/v1/chat/completions"
    assert OpenAIChatJudge("http://127.0.0.1:8000/v1/chat/completions", "m").url == "http://127.0.0.1:8000/v1/chat/completions"
    with pytest.raises(MiningError, match="base_url"):
        OpenAIChatJudge("127.0.0.1:8000", "m")
    with pytest.raises(MiningError, match="timeout"):
        OpenAIChatJudge("http://127.0.0.1:8000", "m", timeout=0)
    assert "sk-" not in repr(OpenAIChatJudge("http://127.0.0.1:8000", "m", api_key="sk-secret"))


def test_parse_judge_reply_variants():
    assert parse_judge_reply('{"ok": true, "reason": "fine"}') == JudgeVerdict(True, "fine")
    assert parse_judge_reply('Verdict below.\n{"decision": "INVALID", "explanation": "lengths differ"}') == JudgeVerdict(False, "lengths differ")
    assert parse_judge_reply("ACCEPT: only C+ shows the traceback") == JudgeVerdict(True, "only C+ shows the traceback")
    assert parse_judge_reply("**Reject** - both show it") == JudgeVerdict(False, "both show it")
    with pytest.raises(ValueError):
        parse_judge_reply("")


def test_judge_messages_trim_long_contexts_around_the_difference():
    filler = "".join(f"## Step {i}: bash\nAction: $ cat docs/{i}.md\nObservation (exit 0):\nUnits and conversions, page {i}.\n\n" for i in range(1, 200))
    pos, neg = filler + POS, filler + NEG
    pair = ContrastivePair("trajectory", QUERY, ANSWER, Context(text=pos), Context(text=neg), text_difference(pos, neg))
    user = judge_messages(pair, max_prompt_tokens=400)[1]["content"]
    assert "FAILED tests/test_units.py::test_feet_to_meters" in user and "lines elided" in user
    assert len(user) < len(pos)
