"""The only code that talks to GitHub.

`client`: the App's identity and one repository's calls (installation tokens, retries,
one error type, `GitHubError`); `manifest`: registering the App (the manifest flow) and
GitHub's web addresses; `oauth`: signing a person in and what they can read.

May import: `settings`, `redact`, githubkit and httpx. Nothing else of Honk.
"""
