"""Fetching a request's `input_image`: http(s) URLs and data: URIs, safely.

The server fetches the start image when it accepts a job (a presigned URL may expire before
the job runs) and stores the bytes with the job. A URL chosen by a client is a server-side
request forgery vector, so by default only public addresses are contacted:

* the host name is resolved here and *every* resolved address must be public (not private,
  loopback, link-local, shared, reserved or multicast); the connection then goes to the
  checked address itself (the Host header and TLS SNI keep the original name), so a second DNS
  answer cannot swap in an internal address (DNS rebinding);
* redirects are followed by hand, at most `max_redirects`, and each hop is checked the same way;
* the body is streamed with a byte cap and an overall deadline, and must decode as a real
  PNG/JPEG/WebP image under the pixel cap (decompression bombs) -- see `pipeline.engine.image_size`.

Every failure is an `ImageFetchError` whose message is one sentence a client can act on.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
import time
import urllib.parse
from typing import Any

import httpx

from pipeline.engine import image_size
from pipeline.errors import StartImageError

DEFAULT_TIMEOUT = 20.0
DEFAULT_MAX_BYTES = 25 * 2**20
DEFAULT_MAX_REDIRECTS = 5
_REDIRECT_CODES = (301, 302, 303, 307, 308)
_USER_AGENT = "ltx-server-image-fetch/1"


class ImageFetchError(ValueError):
    """The input image could not be fetched or is not a usable image; the message says why."""


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address; false for private, loopback, link-local..."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve_host(host: str, port: int) -> list[str]:
    """All addresses `host` resolves to (IP literals resolve to themselves)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ImageFetchError(f"input_image host {host!r} could not be resolved ({exc}).") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise ImageFetchError(f"input_image host {host!r} has no addresses.")
    return addresses


def check_destination(url: httpx.URL, allow_private: bool) -> str:
    """Resolve the URL's host and return the address to connect to, refusing non-public ones."""
    if url.scheme not in ("http", "https"):
        raise ImageFetchError(f"input_image URL scheme {url.scheme!r} is not allowed; use http, https or data.")
    host = url.host
    if not host:
        raise ImageFetchError("input_image URL has no host.")
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = resolve_host(host, port)
    if not allow_private:
        for address in addresses:
            if not is_public_address(address):
                raise ImageFetchError(
                    f"input_image host {host!r} resolves to {address}, a private, loopback or link-local "
                    "address, which this server does not fetch from."
                )
    return addresses[0]


def decode_data_uri(uri: str, max_bytes: int) -> bytes:
    """The bytes of a `data:[<mime>][;base64],<payload>` URI (base64 or percent-encoded)."""
    header, sep, payload = uri.partition(",")
    if not sep:
        raise ImageFetchError("input_image data URI has no ',' separating header and payload.")
    if len(payload) > max_bytes * 4 // 3 + 8:
        raise ImageFetchError(f"input_image is larger than the {max_bytes // 2**20} MiB limit.")
    if header.lower().endswith(";base64"):
        try:
            # Strict decoding (after dropping whitespace, which some encoders wrap lines with).
            compact = "".join(urllib.parse.unquote(payload).split())
            data = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise ImageFetchError("input_image data URI is not valid base64.") from None
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise ImageFetchError(f"input_image is larger than the {max_bytes // 2**20} MiB limit.")
    return data


def _pinned_request(client: httpx.Client, url: httpx.URL, address: str) -> httpx.Request:
    """A GET to `address` that still presents `url`'s host name (Host header and TLS SNI)."""
    target = url.copy_with(host=address)  # httpx brackets IPv6 literals itself
    headers = {"Host": url.netloc.decode("ascii"), "User-Agent": _USER_AGENT, "Accept": "image/*"}
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    return client.build_request("GET", target, headers=headers, extensions=extensions)


def _download(uri: str, allow_private: bool, timeout: float, max_bytes: int, max_redirects: int) -> bytes:
    deadline = time.monotonic() + timeout
    try:
        url = httpx.URL(uri)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ImageFetchError(f"input_image is not a valid URL ({exc}).") from None
    per_call = httpx.Timeout(timeout)
    with httpx.Client(timeout=per_call, follow_redirects=False, trust_env=False) as client:
        for _hop in range(max_redirects + 1):
            address = check_destination(url, allow_private)
            request = _pinned_request(client, url, address)
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException:
                raise ImageFetchError(f"input_image could not be fetched within {timeout:g} s.") from None
            except httpx.HTTPError as exc:
                raise ImageFetchError(f"input_image could not be fetched ({type(exc).__name__}: {exc}).") from None
            try:
                if response.status_code in _REDIRECT_CODES:
                    location = response.headers.get("location")
                    if not location:
                        raise ImageFetchError("input_image URL redirected without a Location header.")
                    url = url.join(location)
                    continue
                if response.status_code != 200:
                    raise ImageFetchError(
                        f"input_image URL answered HTTP {response.status_code} instead of the image."
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise ImageFetchError(f"input_image is larger than the {max_bytes // 2**20} MiB limit.")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise ImageFetchError(f"input_image is larger than the {max_bytes // 2**20} MiB limit.")
                    if time.monotonic() > deadline:
                        raise ImageFetchError(f"input_image could not be fetched within {timeout:g} s.")
                return bytes(body)
            except httpx.TimeoutException:
                raise ImageFetchError(f"input_image could not be fetched within {timeout:g} s.") from None
            except httpx.HTTPError as exc:
                raise ImageFetchError(f"input_image download failed ({type(exc).__name__}: {exc}).") from None
            finally:
                response.close()
    raise ImageFetchError(f"input_image URL redirected more than {max_redirects} times.")


def fetch_image_bytes(uri: str, **limits: Any) -> bytes:
    """`fetch_image`'s bytes alone."""
    return fetch_image(uri, **limits)[0]


def fetch_image(
    uri: str,
    *,
    allow_private: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
) -> tuple[bytes, tuple[int, int]]:
    """Fetch an http(s) URL or decode a data: URI and check that it is a usable image.

    Returns the raw image bytes (PNG, JPEG or WebP) and the upright (width, height) found by a
    full decode under the pixel cap, so admission need not decode it again. Raises
    `ImageFetchError` with a one-sentence reason on any failure.
    """
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme == "data":
        data = decode_data_uri(uri, max_bytes)
    elif scheme in ("http", "https"):
        data = _download(uri, allow_private, timeout, max_bytes, max_redirects)
    else:
        raise ImageFetchError("input_image must be an http(s) URL or a data: URI.")
    if not data:
        raise ImageFetchError("input_image is empty.")
    try:
        size = image_size(data)  # a full decode under the pixel cap
    except StartImageError as exc:
        message = str(exc)
        raise ImageFetchError(message if message.endswith(".") else message + ".") from None
    return data, size
