"""Is a browser's POST from one of Honk's own pages? The check against cross-site forms.

Browsers say where a request comes from: `Sec-Fetch-Site` (every current browser) and
`Origin` (on every POST, older browsers included). A form on another site that posts to
`/setup` or `/auth/signout` carries `Sec-Fetch-Site: cross-site` (or `same-site`, from a
neighbouring subdomain) and that site's `Origin`, and is refused. A request with neither
header is not a browser's and cannot ride on a person's visit, so it is let through.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request

TRUSTED_FETCH_SITES = ("same-origin", "none")  # "none": typed, bookmarked, reloaded


def from_this_site(request: Request, public_url: str | None) -> bool:
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in TRUSTED_FETCH_SITES
    origin = request.headers.get("origin")
    if origin is None:
        return True
    own = {request.headers.get("host", "")}
    if public_url:
        own.add(urlsplit(public_url).netloc)
    # "null" (a sandboxed frame, a privacy redirect) has no host and is never ours.
    return urlsplit(origin).netloc in own - {""}


CROSS_SITE_SENTENCE = (
    "This form was sent from another site; open Honk's own page and send it from there."
)
