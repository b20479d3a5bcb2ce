"""Reading an OpenAPI document: a file, or a URL fetched through the egress guard."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import yaml

from gateway.errors import ConfigError, EgressBlocked
from gateway.net.egress import EgressPolicy
from gateway.net.outbound import ConnectFailed, Outbound, OutboundCall

__all__ = ["MAX_SPEC_BYTES", "OpenAPIImportError", "fetch_url", "parse_document"]

MAX_SPEC_BYTES = 20 << 20


class OpenAPIImportError(ConfigError):
    """The spec cannot be imported at all (unreadable, not OpenAPI 3, no base URL, ...)."""


def fetch_url(url: str, *, allow: Sequence[str] = (), max_bytes: int = MAX_SPEC_BYTES) -> bytes:
    """Download a spec through the egress guard (call it from synchronous code).

    Args:
        url: An http(s) URL.
        allow: ``egress.allow`` exemptions (host names, IPs, CIDRs); none by default, so private
            and loopback addresses are refused.
        max_bytes: Largest accepted document.

    Raises:
        OpenAPIImportError: refused by the guard, unreachable, not 200, redirected or too large.
    """
    policy = EgressPolicy(allow)
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise OpenAPIImportError(f"{url}: credentials in the URL are not supported")
    try:
        policy.check_host_name(parts.hostname or "")
    except EgressBlocked as e:
        hint = "save the spec to a file and pass its path"
        raise OpenAPIImportError(f"cannot fetch {url}: {e} ({hint})") from None
    return asyncio.run(_download(url, policy, max_bytes))


async def _download(url: str, policy: EgressPolicy, max_bytes: int) -> bytes:
    outbound = Outbound(policy, max_body_bytes=max_bytes)
    accept = "application/json, application/yaml;q=0.9, */*;q=0.5"
    try:
        deadline = asyncio.get_running_loop().time() + 30.0
        response = await outbound.send(OutboundCall("GET", url, {"Accept": accept}, None, deadline))
    except (EgressBlocked, ConnectFailed, OSError) as e:
        raise OpenAPIImportError(f"cannot fetch {url}: {e}") from None
    except TimeoutError:
        raise OpenAPIImportError(f"cannot fetch {url}: no answer within 30 seconds") from None
    finally:
        await outbound.close()
    if 300 <= response.status < 400:
        where = response.headers.get("location", "?")
        raise OpenAPIImportError(f"{url}: redirected to {where} (not followed; use that URL)")
    if response.status != 200:
        raise OpenAPIImportError(f"{url}: HTTP status {response.status}")
    if response.truncated:
        raise OpenAPIImportError(f"{url}: larger than {max_bytes:,} bytes")
    return response.body


def parse_document(raw: bytes, source: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8-sig")
        try:
            data = json.loads(text)
        except ValueError:
            data = yaml.safe_load(text)  # YAML, or JSON that only a YAML parser forgives
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise OpenAPIImportError(f"{source}: not valid JSON or YAML: {problem}") from None
    if not isinstance(data, dict):
        raise OpenAPIImportError(f"{source}: not an OpenAPI document (expected a mapping)")
    version = data.get("openapi")
    if "swagger" in data:
        raise OpenAPIImportError(f"{source}: Swagger 2.0 is not supported; convert it to 3.x")
    if not isinstance(version, str | float) or not str(version).startswith("3."):
        raise OpenAPIImportError(f"{source}: not an OpenAPI 3.x document (no 'openapi: 3.x')")
    return data
