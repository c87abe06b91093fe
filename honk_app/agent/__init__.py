"""The Claude loop: turns, tools dispatch, budgets, caching, the transcript, prompts, pricing.

The loop calls the model and hands each tool call to a `ToolRunner` (`types`); what runs
the tools, and where, is the caller's (`sandbox.tools`). It knows nothing of GitHub, git,
the store or the sandbox.

May import: the anthropic SDK and the standard library. Nothing else of Honk.
"""
