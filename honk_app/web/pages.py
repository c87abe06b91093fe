"""The HTML Honk serves to a person: the home page (the setup page until Honk is an App),
the steps of the registration, and the shared layout of every page."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from honk_app.github.manifest import AppCredentials
from honk_app.settings import Settings

STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
code, pre { background: #f3f3f3; padding: .1rem .3rem; border-radius: 4px; }
pre { padding: .8rem; overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
nav { display: flex; gap: 1rem; align-items: center; border-bottom: 1px solid #ddd;
      padding-bottom: .5rem; margin-bottom: 1rem; }
nav form { margin-left: auto; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #eee; }
td.num, th.num { text-align: right; }
label { display: block; margin: .5rem 0; }
input[type=text], input[type=url] { width: 100%; max-width: 30rem; padding: .3rem; }
button { font-size: 16px; padding: .4rem 1rem; }
.hint { color: #57606a; font-size: 14px; }
.error { color: #cf222e; }
.chart { width: 100%; max-width: 40rem; height: auto; display: block; }
details { margin: .4rem 0; }
"""
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def page(title: str, body: str, *, viewer: str | None = None) -> str:
    nav = '<nav><a href="/">🪿 Honk</a><a href="/runs">Runs</a><a href="/metrics">Metrics</a>'
    if viewer is not None:
        nav += (
            f'<form method="post" action="/auth/signout">{escape(viewer)} '
            f'<button type="submit">Sign out</button></form>'
        )
    nav += "</nav>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{nav}{body}</body></html>"
    )


def home(settings: Settings, *, suggested_url: str) -> str:
    if not settings.has_app_credentials:
        return setup(settings, suggested_url=suggested_url)
    runs = (
        '<a href="/runs">runs</a> (sign in with GitHub)'
        if settings.client_id and settings.client_secret
        else "runs (off: no <code>GITHUB_CLIENT_ID</code>/<code>GITHUB_CLIENT_SECRET</code>)"
    )
    model = (
        ""
        if settings.anthropic_api_key
        else "<p class='error'>No <code>ANTHROPIC_API_KEY</code> yet: runs will stop at the "
        "agent step. Add it to <code>.env</code> and restart Honk.</p>"
    )
    return page(
        "Honk",
        f"""
<h1>🪿 Honk is running</h1>
<p>GitHub App <code>{settings.app_id}</code> on <code>{escape(settings.github_api_url)}</code>.
Label an issue <code>{escape(settings.label)}</code> or comment
<code>/honk &lt;what to do&gt;</code> in a repository where the App is installed.</p>
{model}
<p>Watch it: {runs} · <a href="/metrics">metrics</a> · <a href="/healthz">health</a></p>""",
    )


def setup(settings: Settings, *, suggested_url: str) -> str:
    local = urlsplit(suggested_url).hostname in LOCAL_HOSTS
    warning = (
        "<p class='hint'>GitHub cannot deliver webhooks to this machine's own address. Give "
        "the address GitHub can reach (a reverse proxy, a tunnel), or a relay's URL as the "
        "webhook URL below (a <a href='https://smee.io'>smee.io</a> channel forwarded to "
        "<code>/api/github/webhooks</code> here).</p>"
        if local
        else ""
    )
    return page(
        "Set up Honk",
        f"""
<h1>🪿 Set up Honk</h1>
<p>Honk is running, but it is not a GitHub App yet. Register it on GitHub in one step:
GitHub creates the App with the permissions and events Honk needs
(<code>app-manifest.yml</code>), and Honk keeps its credentials.</p>
<form method="post" action="/setup">
<label>This server's public URL
<input type="url" name="public_url" value="{escape(suggested_url)}" required></label>
<p class="hint">Your browser comes back to it after registering; GitHub sends webhooks to
<code>…/api/github/webhooks</code> on it.</p>
{warning}
<label>Webhook URL, only if GitHub must reach Honk through a relay
<input type="url" name="webhook_url" placeholder="https://smee.io/…"></label>
<fieldset><legend>Where the App lives</legend>
<label><input type="radio" name="owner" value="personal" checked> my personal account</label>
<label><input type="radio" name="owner" value="organization"> the organisation
<input type="text" name="organization" placeholder="acme" autocomplete="off"></label>
</fieldset>
<p><button type="submit">Register Honk on GitHub</button></p>
</form>
<p class="hint">GitHub: <code>{escape(settings.github_api_url)}</code> (set
<code>GITHUB_API_URL</code> to <code>https://HOST/api/v3</code> for GitHub Enterprise Server).
Honk writes the App's credentials to <code>.env</code> in the directory it was started from
(mode 0600) and uses them at once.</p>
<details><summary>Register by hand instead</summary>
<ol>
<li>On GitHub: <em>Settings → Developer settings → GitHub Apps → New GitHub App</em>.</li>
<li>Webhook URL <code>{escape(suggested_url)}/api/github/webhooks</code> and a secret;
permissions and events as in <code>app-manifest.yml</code>; callback URL
<code>{escape(suggested_url)}/auth/callback</code>.</li>
<li>Generate a private key, then start Honk with
<pre>APP_ID=… PRIVATE_KEY_PATH=key.pem WEBHOOK_SECRET=… GITHUB_CLIENT_ID=… \\
GITHUB_CLIENT_SECRET=… ANTHROPIC_API_KEY=… honk serve</pre></li>
</ol></details>
<p>To see Honk work without GitHub, run <code>honk demo</code>: it takes a sample issue to a
pull request against a simulated GitHub, offline.</p>""",
    )


def to_github(target: str, manifest: dict[str, Any], *, owner: str | None) -> str:
    """The form that carries the manifest to GitHub; it sends itself, the button is a fallback."""
    where = f"the organisation <code>{escape(owner)}</code>" if owner else "your account"
    return page(
        "Registering Honk on GitHub",
        f"""
<h1>Registering Honk on GitHub…</h1>
<form id="register" method="post" action="{escape(target)}">
<input type="hidden" name="manifest" value="{escape(json.dumps(manifest))}">
<p>GitHub asks you to confirm the new App for {where}, then sends you back here.</p>
<p><button type="submit">Continue to GitHub</button></p>
</form>
<script>document.getElementById("register").submit()</script>""",
    )


def registered(credentials: AppCredentials, env_file: Path, settings: Settings) -> str:
    model = (
        ""
        if settings.anthropic_api_key
        else "<li>Add <code>ANTHROPIC_API_KEY=…</code> to that file and restart Honk: the "
        "agent needs it.</li>"
    )
    return page(
        "Honk is registered",
        f"""
<h1>🪿 Honk is registered</h1>
<p>Honk is now the GitHub App <a href="{escape(credentials.html_url)}">
{escape(credentials.slug)}</a> (id <code>{credentials.app_id}</code>). Its credentials are in
<code>{escape(str(env_file))}</code> (mode 0600): <code>APP_ID</code>, <code>PRIVATE_KEY</code>,
<code>WEBHOOK_SECRET</code>, <code>GITHUB_CLIENT_ID</code>, <code>GITHUB_CLIENT_SECRET</code>.
This server uses them already; <code>honk serve</code> and <code>honk worker</code> read the
file when started from that directory. Keep it out of version control.</p>
<ol>
<li><a id="install" href="{escape(credentials.install_url)}">Install the App</a> on the
repositories Honk should work on. Honk adds its label
<code>{escape(settings.label)}</code> to each.</li>
{model}
<li>Label an issue <code>{escape(settings.label)}</code>, or comment
<code>/honk &lt;what to do&gt;</code>; follow the runs at <a href="/runs">/runs</a>.</li>
</ol>""",
    )


def setup_error(sentence: str) -> str:
    return page(
        "Honk setup",
        f"<h1>Honk setup</h1><p class='error'>{escape(sentence)}</p>"
        f"<p><a href='/'>Back to the setup page</a></p>",
    )


def pages_off() -> str:
    return page(
        "Runs are off",
        "<h1>Runs are off</h1><p>The runs pages are off because Honk has no OAuth client to "
        "sign you in with: set <code>GITHUB_CLIENT_ID</code> and "
        "<code>GITHUB_CLIENT_SECRET</code> (the setup page writes them when it registers the "
        "App) and restart Honk. <code>honk runs</code> lists runs on the server meanwhile.</p>",
    )


def signin_failed(sentence: str) -> str:
    return page(
        "Sign-in failed",
        f"<h1>Sign-in failed</h1><p class='error'>{escape(sentence)}</p>"
        f"<p><a href='/auth/signin'>Try again</a></p>",
    )
