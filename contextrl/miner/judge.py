"""Optional LLM judge for pair verification.

A judge is any callable `(pair) -> JudgeVerdict(ok, reason)`; `verify_pair(judge=...)`
records its verdict as the `judge` check. `OpenAIChatJudge` adapts any OpenAI-compatible
`/v1/chat/completions` endpoint (vLLM, SGLang, llama.cpp server, hosted APIs) using only
the standard library. The judge is asked whether the claimed positive context supports the
answer, the other does not, and nothing but the decisive evidence separates them.

Failures to get a verdict (network errors, HTTP errors, timeouts, unparseable replies)
become a rejecting verdict with `error=True` and the cause as its reason, so a flaky
endpoint never crashes a mining job; with `strict=True` they raise `MiningError` instead.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import mimetypes
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from contextrl.errors import MiningError
from contextrl.miner.pair import ContrastivePair
from contextrl.miner.render import TokenCounter, approx_token_count, fit_contexts


@dataclass(frozen=True)
class JudgeVerdict:
    """A judge's decision on one pair."""

    ok: bool
    reason: str
    error: bool = False
    """True when no real verdict was obtained (the judge failed); `ok` is then False."""


Judge = Callable[[ContrastivePair], JudgeVerdict]

JUDGE_SYSTEM = (
    "You audit training data for context selection. Each item has a question, an answer, a "
    "POSITIVE context that is claimed to support the answer, and a NEGATIVE context that is "
    "claimed not to. Accept the item only if (1) the positive context supports the answer, "
    "(2) the negative context does not, and (3) the contexts are near-identical, differing only "
    "in the evidence that decides the answer (no differences in length, formatting or leaked "
    "answer text that would let someone pick the positive without reading the evidence). "
    'Reply with one JSON object: {"verdict": "accept" or "reject", "reason": "<one sentence>"}.'
)


def judge_messages(pair: ContrastivePair, max_prompt_tokens: int = 6000, count_tokens: TokenCounter = approx_token_count) -> list[dict[str, Any]]:
    """The chat messages sent to the judge (text contexts trimmed around the difference)."""
    head = f"Question:\n{pair.query}\n\nAnswer:\n{pair.answer}\n\n"
    if pair.kind == "image":
        content: list[dict[str, Any]] = [{"type": "text", "text": head + "POSITIVE context:"}]
        content.append({"type": "image_url", "image_url": {"url": _data_url(pair.positive.image_path)}})
        content.append({"type": "text", "text": "NEGATIVE context:"})
        content.append({"type": "image_url", "image_url": {"url": _data_url(pair.negative.image_path)}})
        return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": content}]

    def body(p: str, n: str) -> str:
        return f"{head}POSITIVE context:\n{p}\n\nNEGATIVE context:\n{n}"

    fitted = fit_contexts(pair.positive.text or "", pair.negative.text or "", pair.difference, max_prompt_tokens, lambda p, n: count_tokens(body(p, n)))
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": body(fitted.positive, fitted.negative)}]


def _data_url(path: str | None) -> str:
    if not path:
        raise MiningError("image pair context has no image_path")
    mime = mimetypes.guess_type(path)[0] or "image/png"
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise MiningError(f"cannot read image {path} for the judge: {e}") from None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


_ACCEPT = {"accept", "accepted", "valid", "yes", "ok", "pass", "true"}
_REJECT = {"reject", "rejected", "invalid", "no", "fail", "false"}


def parse_judge_reply(content: str) -> JudgeVerdict:
    """Read a verdict from the judge's reply text.

    Understands a JSON object with `verdict` ("accept"/"reject", also valid/invalid, yes/no)
    or boolean `ok`/`valid`, optionally inside a code fence, and plain text starting with
    ACCEPT or REJECT. Raises ValueError when neither is there.
    """
    text = content.strip()
    m = re.search(r"\{.*\}", text, re.S)
    if m:
        try:
            obj = json.loads(m.group())
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, Mapping):
            reason = str(obj.get("reason", obj.get("explanation", ""))).strip()
            for key in ("verdict", "decision", "ok", "valid", "accept"):
                if key not in obj:
                    continue
                v = obj[key]
                word = str(v).strip().lower() if not isinstance(v, bool) else ("true" if v else "false")
                if word in _ACCEPT:
                    return JudgeVerdict(True, reason or "judge accepted")
                if word in _REJECT:
                    return JudgeVerdict(False, reason or "judge rejected")
                raise ValueError(f"unknown verdict {v!r} in judge reply")
    w = re.match(r"^\W*(accept|reject)\w*\b\W*(.*)", text, re.I | re.S)
    if w:
        ok = w.group(1).lower() == "accept"
        return JudgeVerdict(ok, w.group(2).strip() or ("judge accepted" if ok else "judge rejected"))
    raise ValueError("no verdict found in judge reply: " + (text[:200] or "<empty>"))


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAIChatJudge:
    """A judge backed by an OpenAI-compatible chat-completions endpoint (stdlib only).

    `base_url` may be the server root (`http://host:8000`), its `/v1`, or the full
    `/v1/chat/completions` URL. Proxies from the environment are used except for loopback
    hosts. With `strict=True` a failure to get a verdict raises MiningError.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        strict: bool = False,
        temperature: float = 0.0,
        max_tokens: int = 256,
        max_prompt_tokens: int = 6000,
        count_tokens: TokenCounter = approx_token_count,
        extra_body: Mapping[str, Any] | None = None,
    ):
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise MiningError(f"OpenAIChatJudge: base_url={base_url!r} must be an http(s) URL such as http://127.0.0.1:8000/v1")
        if timeout <= 0:
            raise MiningError(f"OpenAIChatJudge: timeout={timeout!r} must be > 0 seconds")
        url = base_url.rstrip("/")
        if not url.endswith("/chat/completions"):
            url += "/chat/completions" if url.endswith("/v1") else "/v1/chat/completions"
        self.url, self.model, self.timeout, self.strict = url, model, float(timeout), strict
        self._api_key = api_key
        self.temperature, self.max_tokens = temperature, max_tokens
        self.max_prompt_tokens, self.count_tokens = max_prompt_tokens, count_tokens
        self.extra_body = dict(extra_body or {})
        proxies = {} if _is_loopback(parsed.hostname) else None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))

    def __repr__(self) -> str:
        return f"OpenAIChatJudge(url={self.url!r}, model={self.model!r}, timeout={self.timeout}, strict={self.strict})"

    def _fail(self, reason: str) -> JudgeVerdict:
        if self.strict:
            raise MiningError(f"judge {self.model} at {self.url}: {reason}")
        return JudgeVerdict(False, f"judge error: {reason}", error=True)

    def request_body(self, pair: ContrastivePair) -> dict[str, Any]:
        """The JSON body POSTed for a pair."""
        return {
            "model": self.model,
            "messages": judge_messages(pair, self.max_prompt_tokens, self.count_tokens),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **self.extra_body,
        }

    def __call__(self, pair: ContrastivePair) -> JudgeVerdict:
        data = json.dumps(self.request_body(pair)).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode("utf-8", "replace").strip() if e.fp is not None else ""
            return self._fail(f"HTTP {e.code} {e.reason}" + (f": {detail}" if detail else ""))
        except (TimeoutError, socket.timeout):
            return self._fail(f"timed out after {self.timeout:g}s")
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                return self._fail(f"timed out after {self.timeout:g}s")
            return self._fail(f"unreachable ({e.reason})")
        except (ConnectionError, OSError) as e:
            return self._fail(f"connection failed ({e})")
        try:
            obj = json.loads(raw)
            content = obj["choices"][0]["message"]["content"]
            if not isinstance(content, str):
                raise TypeError(f"message content is {type(content).__name__}")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return self._fail(f"malformed response ({type(e).__name__}: {e}): {raw[:200]!r}")
        try:
            return parse_judge_reply(content)
        except ValueError as e:
            return self._fail(str(e))
