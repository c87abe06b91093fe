"""The simulators' own tests: the simulated GitHub and the scripted Claude keep to
GitHub's and Anthropic's shapes and rules."""
