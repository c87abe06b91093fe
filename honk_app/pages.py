"""The HTML Honk serves to a person: the home page, which doubles as the setup page."""

from __future__ import annotations

from html import escape

from honk_app.config import Settings

STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; }
code, pre { background: #f3f3f3; padding: .1rem .3rem; border-radius: 4px; }
pre { padding: .8rem; overflow-x: auto; }
"""


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def home(settings: Settings) -> str:
    if settings.has_app_credentials:
        return _page(
            "Honk",
            f"""
<h1>🪿 Honk is running</h1>
<p>GitHub App <code>{settings.app_id}</code> on
<code>{escape(settings.github_api_url)}</code>. Label an issue
<code>{escape(settings.label)}</code> or comment <code>/honk &lt;what to do&gt;</code> in a
repository where the App is installed.</p>
<p><a href="/metrics">Metrics</a> · <a href="/healthz">Health</a></p>""",
        )
    return _page(
        "Set up Honk",
        f"""
<h1>🪿 Set up Honk</h1>
<p>Honk is running, but it is not a GitHub App yet: it has no <code>APP_ID</code>,
<code>PRIVATE_KEY</code> and <code>WEBHOOK_SECRET</code>.</p>
<ol>
<li>On GitHub, open <em>Settings → Developer settings → GitHub Apps → New GitHub App</em>
(for an organisation: the organisation's settings).</li>
<li>Webhook URL:
<code>{escape(settings.public_url or "https://<this server>")}/api/github/webhooks</code>,
with a webhook secret of your choice. Permissions and events are listed in
<code>app-manifest.yml</code>: contents, issues and pull requests read &amp; write, metadata read;
events issues, issue comment, pull request, pull request review, installation.</li>
<li>Generate a private key, then start Honk with
<pre>APP_ID=… PRIVATE_KEY_PATH=key.pem WEBHOOK_SECRET=… ANTHROPIC_API_KEY=… honk serve</pre></li>
<li>Install the App on your repositories and label an issue
<code>{escape(settings.label)}</code>.</li>
</ol>
<p>To see Honk work without GitHub, run <code>honk demo</code>: it takes a sample issue to a
pull request against a simulated GitHub, offline.</p>""",
    )
