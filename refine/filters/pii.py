"""PII anonymisation (FineWeb, Penedo et al. 2024, section 3.4; datatrove's ``PIIFormatter``):
e-mail addresses and public IPv4 addresses in a kept document's text are replaced by placeholders.

``email``
    the RFC 5322 "general e-mail regex" datatrove's pattern is cut from (unquoted local part,
    dotted domain or bracketed address literal), in both cases: datatrove's is lowercase only,
    so it misses ``John.Smith@Example.com``. Every match becomes `email_placeholder`
    (``email@example.com``, the first of datatrove's two).
``ip``
    dotted-quad IPv4 addresses, not inside a longer run of digits and dots (datatrove's pattern has
    no such guard, so it takes ``1.2.3.4`` out of a version ``1.2.3.4.5``); replaced only when
    ``ipaddress`` calls them global (datatrove's ``only_remove_public_ips``), so private (10/8,
    172.16/12, 192.168/16), loopback, link-local, multicast, documentation and other reserved
    addresses (and multicast groups, which ``ipaddress`` calls global) are left alone.

Placeholders are deterministic per address, where datatrove cycles through its list in the order
a worker meets the matches (so its output depends on how documents were spread over workers):
the e-mail one is fixed, and an IP becomes one of `ip_placeholders` chosen by the CRC-32 of the
address, so one address always maps to one placeholder. Our default IP placeholders are RFC 5737
documentation addresses, where datatrove's are random public addresses: they are not global, so
anonymising twice changes nothing and no reader takes them for a real host. IPv6 addresses are
not matched (nor are they by datatrove).

Metrics (``pii.`` + ): emails, ips (replacements made). Pure functions; the stage never drops a
document. It is meant to run after dedup, on the text that is written (dedup compares original
texts, so a placeholder never makes two documents look alike).
"""

from __future__ import annotations

import ipaddress
import re
import time
import zlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from refine.stages import PII

STAGE = PII.name
EMAIL_PLACEHOLDER = "email@example.com"
IP_PLACEHOLDERS = ("192.0.2.1", "198.51.100.1", "203.0.113.1")  # RFC 5737: never global

# The "General Email Regex (RFC 5322 Official Standard)" without its quoted local part.
EMAIL = re.compile(
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
    r"(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"|\[(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:"
    r"(?:[\x01-\x08\x0b\x0c\x0e-\x1f\x21-\x5a\x53-\x7f]|\\[\x01-\x09\x0b\x0c\x0e-\x7f])+)\])")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = re.compile(rf"(?<![\d.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\d|\.\d)")


class PIIConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = False  # off in the refinedweb preset
    emails: bool = True
    ips: bool = True
    only_public_ips: bool = True  # datatrove's only_remove_public_ips
    email_placeholder: str = EMAIL_PLACEHOLDER
    ip_placeholders: list[str] = Field(default_factory=lambda: list(IP_PLACEHOLDERS))

    @field_validator("ip_placeholders")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("ip_placeholders must not be empty")
        return v


def is_public_ip(address: str) -> bool:
    """Whether `address` parses as an IPv4 address of a host on the public internet:
    ``ipaddress``'s ``is_global``, less multicast groups (which it calls global; a group such as
    mDNS's 224.0.0.251 identifies nobody)."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    return ip.is_global and not ip.is_multicast


def anonymise(text: str, config: PIIConfig | None = None) -> tuple[str, dict[str, float]]:
    """(`text` with its e-mail and public IP addresses replaced, {"emails": n, "ips": n})."""
    c = config or PIIConfig()
    counts = {"emails": 0, "ips": 0}
    if c.emails and "@" in text:
        def email(match: re.Match[str]) -> str:
            counts["emails"] += match.group(0) != c.email_placeholder  # not anonymised yet
            return c.email_placeholder

        text = EMAIL.sub(email, text)
    if c.ips and "." in text:
        placeholders = c.ip_placeholders

        def ip(match: re.Match[str]) -> str:
            found = match.group(0)
            if c.only_public_ips and not is_public_ip(found):
                return found
            if found in placeholders:  # already anonymised (placeholders may be public)
                return found
            counts["ips"] += 1
            return placeholders[zlib.crc32(found.encode()) % len(placeholders)]

        text = IPV4.sub(ip, text)
    return text, {k: float(v) for k, v in counts.items()}


def metrics(counts: dict[str, float]) -> dict[str, float]:
    """The document metrics of `anonymise`'s counts (``pii.emails``, ``pii.ips``)."""
    return {f"{PII.prefix}{k}": v for k, v in counts.items()}


def anonymise_counted(text: str, config: PIIConfig, stage: dict[str, Any]
                      ) -> tuple[str, dict[str, float]]:
    """`anonymise`, counted into a stats stage (in, out, bytes, cpu_s; emails, ips and
    documents_changed: the stage's own) and returning the document metrics."""
    started = time.thread_time()
    anonymised, counts = anonymise(text, config)
    for key, value in (("in", 1), ("out", 1), ("bytes_in", len(text)),
                       ("bytes_out", len(anonymised)), ("cpu_s", time.thread_time() - started),
                       ("emails", counts["emails"]), ("ips", counts["ips"]),
                       ("documents_changed", int(anonymised != text))):
        stage[key] = stage.get(key, 0) + value
    return anonymised, metrics(counts)


__all__ = ["EMAIL", "EMAIL_PLACEHOLDER", "IPV4", "IP_PLACEHOLDERS", "STAGE", "PIIConfig",
           "anonymise", "anonymise_counted", "is_public_ip", "metrics"]
