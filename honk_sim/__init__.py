"""The simulators: GitHub (REST subset, git smart HTTP, signed webhooks) and a scripted Claude.

Real servers on loopback, used by `honk demo` and the tests; Honk reaches them only
through its settings (GITHUB_API_URL, ANTHROPIC_BASE_URL). `harness` wires the real app to
them; `demo` is `honk demo`. This package imports `honk_app`; `honk_app` never imports it
(its CLI loads `honk_sim.demo` inside the demo command only).
"""
